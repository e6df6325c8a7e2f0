"""Redis with a password, through REDIS_URL alone: the shared client, the Channels layer and the
Celery broker all authenticate (docs/deployment.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, free_port

PASSWORD = "s3cret-redis-password"

CHECK = """
import asyncio, django
django.setup()
from channels.layers import get_channel_layer
from chatbot.celery import app
from chatbot.redis_client import get_redis

get_redis().set("chatbot:password-check", "1")
assert get_redis().get("chatbot:password-check") == "1"

async def round_trip():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("password-check", channel)
    await layer.group_send("password-check", {"type": "check", "ok": True})
    return await asyncio.wait_for(layer.receive(channel), 5)

assert asyncio.run(round_trip())["ok"] is True
with app.connection_for_write() as connection:
    connection.ensure_connection(max_retries=1)
print("ok")
"""


@pytest.fixture
def redis_with_password():
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(10)


def run_check(redis_url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="tests.settings")
    env.pop("CELERY_BROKER_URL", None)
    return subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_every_redis_client_authenticates_with_the_password_in_redis_url(redis_with_password):
    run = run_check(f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password}/0")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("ok")
    refused = run_check(f"redis://:wrong@127.0.0.1:{redis_with_password}/0")
    assert refused.returncode != 0
