"""The whole chat path with real parts: the customer socket (real ASGI app, real Redis layer),
PostgreSQL, the Redis broker, a real `manage.py run_worker` process and the project's model
loaded through the Hugging Face code."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Generation, Message
from tests.conversations.test_consumers import new_customer, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def collect_until(communicator, types: set[str], timeout: float = 120) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = await communicator.receive_json_from(timeout=deadline - time.monotonic())
        events.append(event)
        if event["type"] in types:
            return events
    raise AssertionError(f"no {types} in {events}")


async def test_customer_message_streams_an_answer_from_the_worker_and_stores_it(live_worker):
    communicator, _ = await new_customer()
    saved = await send_message(communicator, "Where is my order?")
    assert saved["type"] == "message.saved"
    events = await collect_until(communicator, {"answer.done", "generation.failed", "error"})
    kinds = [event["type"] for event in events]
    assert kinds[0] == "generation.started", kinds
    assert kinds[-1] == "answer.done", events
    assert "answer.thinking" in kinds
    deltas = [event["text"] for event in events if event["type"] == "answer.delta"]
    assert deltas, "the answer streamed in pieces"
    done = events[-1]
    assert "".join(deltas) == done["message"]["text"]
    assert "<think>" not in done["message"]["text"] and "</think>" not in done["message"]["text"]

    message = await database_sync_to_async(Message.objects.select_related("generation").get)(pk=done["message"]["id"])
    assert message.author == Message.Author.BOT
    assert message.text == done["message"]["text"]
    assert message.reasoning, "the reasoning is stored apart from the answer"
    assert message.reasoning not in message.text
    assert message.generation.status == Generation.Status.DONE
    assert message.model_variant == "gptq-int4"
    assert message.completion_tokens > 0 and message.prompt_tokens > 0
    assert message.time_to_first_token_ms is not None and message.latency_ms >= message.time_to_first_token_ms
    assert message.generation.worker == live_worker.name
    await communicator.disconnect()


async def test_a_new_message_mid_answer_cancels_the_running_one(live_worker):
    communicator, _ = await new_customer()
    await send_message(communicator, "I want to return a damaged item", client_id="m1")
    await collect_until(communicator, {"generation.started"})
    second = await send_message(communicator, "actually, what are your opening hours?", client_id="m2")
    assert second["type"] != "error", second

    @database_sync_to_async
    def second_generation():
        return Generation.objects.get(prompt_message__client_id="m2").pk

    # The first answer may have finished before the second message came: its answer.done is
    # not the one awaited. Collect until the second message's answer is done.
    events = [second]
    while True:
        events += await collect_until(communicator, {"answer.done"})
        if events[-1]["message"]["generation_id"] == await second_generation():
            break
    cancelled = [e for e in events if e["type"] == "generation.cancelled"]

    @database_sync_to_async
    def generations():
        return list(Generation.objects.order_by("id").values_list("status", flat=True))

    statuses = await generations()
    assert len(statuses) == 2 and statuses[-1] == Generation.Status.DONE
    # The first was either cancelled mid-answer or had already finished before the second came.
    assert statuses[0] in (Generation.Status.CANCELLED, Generation.Status.DONE)
    if statuses[0] == Generation.Status.CANCELLED:
        assert cancelled
    await communicator.disconnect()


async def test_concurrent_customers_are_all_answered(live_worker):
    customers = [await new_customer() for _ in range(4)]
    for index, (communicator, _) in enumerate(customers):
        await send_message(communicator, f"how much is shipping to zone {index}?", client_id=f"q{index}")
    results = await asyncio.gather(
        *(collect_until(communicator, {"answer.done", "generation.failed"}) for communicator, _ in customers)
    )
    assert [events[-1]["type"] for events in results] == ["answer.done"] * 4
    for communicator, _ in customers:
        await communicator.disconnect()
