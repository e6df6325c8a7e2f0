"""The desk with the real worker and model: a suggested reply streams to the agent only, and an
answer in flight when an agent takes over is cancelled and never stored."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Conversation, Generation, Message
from tests.conversations.test_consumers import new_customer, send_message
from tests.desk.test_desk_consumer import agent, receive_type, receive_where
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_a_suggested_reply_streams_to_the_agent_and_never_to_the_customer(live_worker):
    kim = await agent("kim")
    customer, _ = await new_customer()
    saved = await send_message(customer, "I want to return my shoes")
    conversation_id = saved["conversation"]["id"]
    await collect_until(customer, {"answer.done"})
    await kim.send_json_to({"type": "conversation.open", "conversation_id": conversation_id})
    detail = await receive_type(kim, "conversation.detail")
    bot = [m for m in detail["messages"] if m["author"] == "bot"]
    assert bot and bot[0]["reasoning"] and bot[0]["model_variant"] == "gptq-int4"  # staff see the reasoning
    await kim.send_json_to({"type": "conversation.claim", "conversation_id": conversation_id})
    await receive_type(customer, "conversation.updated")

    await kim.send_json_to({"type": "suggestion.request", "conversation_id": conversation_id})
    done = await receive_type(kim, "suggestion.done", timeout=120)
    assert done["text"].strip() and "<think>" not in done["text"]
    generation = await database_sync_to_async(Generation.objects.get)(pk=done["generation_id"])
    assert (generation.kind, generation.status, generation.text) == ("suggestion", "done", done["text"])
    # Nothing of it reached the customer, and nothing was stored as a message.
    frames = []
    while not await customer.receive_nothing(timeout=1):
        frames.append(await customer.receive_json_from())
    assert not [f for f in frames if "suggestion" in f["type"] or f.get("generation_id") == generation.pk], frames
    assert await database_sync_to_async(Message.objects.filter(author=Message.Author.BOT).count)() == 1
    for socket in (kim, customer):
        await socket.disconnect()


async def test_an_answer_in_flight_when_an_agent_takes_over_is_cancelled_and_never_stored(live_worker):
    """The first race, with the real worker: the agent claims while the answer streams. The
    answers of the test model take a fraction of a second, so the claim is sent at the answer's
    first frame, and a try whose answer finished first is tried again."""
    kim = await agent("kim")
    for attempt in range(10):
        customer, _ = await new_customer()
        saved = await send_message(customer, "My parcel arrived damaged, what can I do?", client_id=f"r{attempt}")
        conversation_id = saved["conversation"]["id"]
        await receive_where(customer, lambda f: f["type"] in ("generation.started", "answer.thinking"), timeout=60)
        await kim.send_json_to({"type": "conversation.claim", "conversation_id": conversation_id})
        events = await collect_until(customer, {"generation.cancelled", "answer.done"})
        if events[-1]["type"] == "answer.done":
            await customer.disconnect()
            continue  # the answer won the race this time
        generation_id = events[-1]["generation_id"]
        conversation = await database_sync_to_async(Conversation.objects.get)(public_id=conversation_id)
        assert conversation.status == Conversation.Status.WITH_AGENT
        generation = await database_sync_to_async(Generation.objects.get)(pk=generation_id)
        assert generation.status == Generation.Status.CANCELLED
        # Whatever the worker had in flight, no bot message is stored after the takeover.
        await customer.receive_nothing(timeout=2)
        stored = await database_sync_to_async(
            Message.objects.filter(conversation=conversation, author=Message.Author.BOT).count
        )()
        assert stored == 0
        await customer.disconnect()
        break
    else:
        pytest.fail("the answer finished before the claim in every try")
    await kim.disconnect()
