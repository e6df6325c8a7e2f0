"""The test harness's flush (tests/conftest.py) survives a deadlock with another session's
transaction, as it can meet the live worker's sweep between transactional tests: a real deadlock
on the real PostgreSQL, which the database breaks by ending the flush's TRUNCATE."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until_waiting(observer: psycopg.Connection, pid: int, timeout: float = 30) -> None:
    """Until the session `pid` waits for a lock."""
    deadline = time.monotonic() + timeout
    while not observer.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid]).fetchone()[0]:
        if time.monotonic() > deadline:
            raise AssertionError(f"session {pid} never waited for a lock")
        time.sleep(0.01)


def test_the_flush_is_tried_again_when_the_database_ends_it_to_break_a_deadlock():
    if connection.vendor != "postgresql":
        pytest.skip("the suite's database is PostgreSQL")
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    first, last = connection.ops.quote_name(tables[0]), connection.ops.quote_name(tables[-1])
    params = connection.get_connection_params()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        flush_pid = cursor.fetchone()[0]

    # Another session, as the sweep: it holds a lock on the table the TRUNCATE takes last. It
    # waits longer than the flush's session before it looks for a deadlock, so that the database
    # ends the flush's transaction, not this one.
    other = psycopg.connect(**params)
    other.execute("SET deadlock_timeout = '60s'")
    other.execute(f"LOCK TABLE {last} IN ROW SHARE MODE")
    outcome: dict[str, object] = {}

    def read_the_first_table_once_the_flush_waits() -> None:
        try:
            with psycopg.connect(**params, autocommit=True) as observer:
                wait_until_waiting(observer, flush_pid)  # the flush holds the first table

                def watch_the_other_session() -> None:
                    wait_until_waiting(observer, other.info.backend_pid)
                    outcome["other_waited"] = True

                watcher = threading.Thread(target=watch_the_other_session)
                watcher.start()
                other.execute(f"SELECT count(*) FROM {first}")  # waits for the flush: a deadlock
                watcher.join()
            other.commit()
            outcome["other_read"] = True
        except Exception as error:  # noqa: BLE001 - the test reports it
            outcome["error"] = repr(error)

    thread = threading.Thread(target=read_the_first_table_once_the_flush_waits)
    thread.start()
    try:
        call_command("flush", interactive=False, verbosity=0)
    finally:
        thread.join()
        other.close()
    # Each session waited for the other; the database ended the flush's transaction (the other
    # session read its table), and the flush, tried again, emptied the tables.
    assert outcome == {"other_waited": True, "other_read": True}
