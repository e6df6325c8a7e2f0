"""A worker whose batch is full still answers everyone, in order of arrival, and tells the
waiting customers their place."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from chatbot.celery import app
from chatbot.conversations.models import Message
from tests.conftest import WorkerProcess
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def pool_stats(destination: str, timeout: float = 20) -> dict:
    """The worker's task pool as Celery reports it (asked again until its control queue is up:
    the heartbeat that says the worker started can come before it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = app.control.inspect(destination=[destination], timeout=1).stats()
        if stats:
            return stats[destination]["pool"]
    raise AssertionError(f"{destination} did not answer Celery's stats in {timeout} s")


async def test_full_worker_queues_in_order_and_answers_everyone(live_worker, tmp_path):
    await asyncio.to_thread(live_worker.stop)
    narrow = await asyncio.to_thread(WorkerProcess("narrow", tmp_path / "narrow.log", ENGINE_MAX_BATCH="2").start)
    customers = [await new_customer() for _ in range(6)]
    try:
        # Before its first task, the worker has started every task thread (a burst of tasks
        # does not wait for Celery's consumer to start them one by one).
        stats = await asyncio.to_thread(pool_stats, "gpu@narrow")
        assert stats["threads"] == stats["max-concurrency"] == 16
        # A first answer warms the worker up (its first task's set-up would hold the first
        # customer back behind later ones, and that is not the order under test).
        warm, _ = await new_customer()
        await send_message(warm, "hello?", client_id="warm")
        assert (await collect_until(warm, {"answer.done", "generation.failed"}))[-1]["type"] == "answer.done"
        await warm.disconnect()
        for index, (communicator, _) in enumerate(customers):
            await send_message(communicator, f"what is your returns policy, question {index}?", client_id=f"b{index}")
        results = await asyncio.gather(*(collect_until(c, {"answer.done", "generation.failed"}) for c, _ in customers))
        assert [events[-1]["type"] for events in results] == ["answer.done"] * 6
        places = [[e["position"] for e in events if e["type"] == "generation.queued"] for events in results]
        assert any(places), "customers beyond the batch were told their place"
        # Four wait behind a batch of two. (A place moves forward as the line moves, and back
        # only when a message that arrived earlier reaches the engine a moment later, through
        # another task thread.)
        assert all(1 <= place <= 4 for waited in places for place in waited), places

        @database_sync_to_async
        def admissions() -> list[float]:
            """When the engine gave each customer's answer its place in the batch (ms)."""
            ids = [events[-1]["message"]["id"] for events in results]
            rows = Message.objects.filter(pk__in=ids).values_list("pk", "generation__created_at", "queue_wait_ms")
            by_id = {pk: created.timestamp() * 1000 + wait for pk, created, wait in rows}
            return [by_id[i] for i in ids]

        admitted = await admissions()
        # Whoever had to wait got their place in the batch after everyone whose message arrived
        # before theirs (the engine's line is by arrival, whichever task thread came first).
        for later, waited in enumerate(places):
            if waited and later:
                assert admitted[later] >= max(admitted[:later]), (later, admitted)
    finally:
        for communicator, _ in customers:
            await communicator.disconnect()
        await asyncio.to_thread(narrow.stop)
        await asyncio.to_thread(live_worker.start)
