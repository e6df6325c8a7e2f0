"""A worker whose batch is full still answers everyone, in order of arrival, and tells the
waiting customers their place."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Message
from tests.conftest import WorkerProcess
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_full_worker_queues_in_order_and_answers_everyone(live_worker, tmp_path):
    await asyncio.to_thread(live_worker.stop)
    narrow = await asyncio.to_thread(WorkerProcess("narrow", tmp_path / "narrow.log", ENGINE_MAX_BATCH="2").start)
    customers = [await new_customer() for _ in range(6)]
    try:
        for index, (communicator, _) in enumerate(customers):
            await send_message(communicator, f"what is your returns policy, question {index}?", client_id=f"b{index}")
        results = await asyncio.gather(*(collect_until(c, {"answer.done", "generation.failed"}) for c, _ in customers))
        assert [events[-1]["type"] for events in results] == ["answer.done"] * 6
        places = [[e["position"] for e in events if e["type"] == "generation.queued"] for events in results]
        assert any(places), "customers beyond the batch were told their place"
        for waited in places:
            assert waited == sorted(waited, reverse=True)  # a place only ever moves forward

        @database_sync_to_async
        def waits() -> list[float]:
            ids = [events[-1]["message"]["id"] for events in results]
            by_id = dict(Message.objects.filter(pk__in=ids).values_list("pk", "queue_wait_ms"))
            return [by_id[i] for i in ids]

        queue_waits = await waits()
        # Later arrivals waited longer for their place in the batch (arrival order is kept).
        assert queue_waits[-1] >= queue_waits[0]
    finally:
        for communicator, _ in customers:
            await communicator.disconnect()
        await asyncio.to_thread(narrow.stop)
        await asyncio.to_thread(live_worker.start)
