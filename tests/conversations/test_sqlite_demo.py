"""The embedded demo (`make run` without DATABASE_URL) keeps its data in SQLite, which the web
and the worker's task threads write at once: concurrent answers must not fail with "database is
locked"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# Eight threads, each a customer whose messages are posted, claimed and answered through the real
# services: each transaction reads first and writes after, as the worker's and the web's do.
WRITERS = """
import json, threading, time
from django.db import connection
from chatbot.conversations.services import customer, generations
from chatbot.conversations.models import Generation, Message
from chatbot.redis_client import get_redis
from chatbot.serving.heartbeats import WorkerStatus, heartbeat_key

# A live worker's heartbeat, so that each post hands its generation to the broker as in the demo.
served = WorkerStatus(name="sqlite-test", variants={"gptq-int4": {"state": "ready"}}, running=0, waiting=0, reported_at=time.time())
get_redis().set(heartbeat_key(served.name), served.encode(), ex=120)
errors = []

def run_customer(index):
    try:
        for turn in range(6):
            post = customer.customer_message_post(
                visitor_id=f"v{index}", conversation=None, text="where is my order?", client_id=f"c{index}-{turn}"
            )
            claimed = generations.generation_claim(generation_id=post.generation.pk, worker=f"w{index}")
            generations.generation_complete(generation_id=claimed.pk, text="It ships today.", reasoning="", measures={})
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()

threads = [threading.Thread(target=run_customer, args=(i,)) for i in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
get_redis().flushdb()
print(json.dumps({"errors": errors, "answers": Message.objects.filter(author=Message.Author.BOT).count()}))
"""


def test_concurrent_answers_on_the_demo_s_sqlite_file_do_not_lock_each_other_out(tmp_path):
    # A Redis database of its own: no worker of the suite hears of these generations (the
    # threads claim and answer them themselves).
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/13",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/13",
        DJANGO_SETTINGS_MODULE="chatbot.settings",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    run = subprocess.run(
        [*manage, "shell", "-c", WRITERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome == {"errors": [], "answers": 48}
