"""The web and the worker take their PostgreSQL connections from a pool (chatbot/settings.py). A
database restart breaks every pooled connection at once; the next queries must still work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

# Run as the product runs: a process of its own, the pool on (only the test process turns it off).
CHILD = """
import django
django.setup()
from django.conf import settings
from django.db import close_old_connections, connection

assert settings.DATABASES["default"]["OPTIONS"].get("pool"), "the pool is off"

def backend_pid():
    close_old_connections()  # what Django does around each request, Channels around each call
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        close_old_connections()

first = backend_pid()
import psycopg
db = settings.DATABASES["default"]
with psycopg.connect(  # a connection of its own, outside the pool
    host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True, application_name="pool-admin"
) as admin:
    # What a restart does to the pool: every connection of this process is gone, server side.
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pool-check'"
    )
print("after", backend_pid() != first, backend_pid() != first)
"""


def test_queries_after_the_database_dropped_every_pooled_connection_still_work():
    env = worker_env(PGAPPNAME="pool-check")
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "after True True"
