"""Many turns and the model's own handoff, through the real worker, socket and test model."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Conversation, Message
from inference_worker.demo_model.corpus import load_corpus
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

# Eight questions in one conversation: small talk, topic changes, thanks in the middle.
EIGHT_TURNS = (
    "greeting",
    "order_status",
    "refund_timing",
    "thanks",
    "shipping_costs",
    "password_reset",
    "opening_hours",
    "cancel_order",
)


async def test_the_eighth_question_of_a_conversation_gets_its_own_answer(live_worker):
    corpus = load_corpus()
    customer, _ = await new_customer()
    answers = []
    for turn, intent_id in enumerate(EIGHT_TURNS):
        saved = await send_message(customer, corpus.intent(intent_id).train[0], client_id=f"t{turn}")
        assert saved["type"] == "message.saved", saved
        events = await collect_until(customer, {"answer.done", "generation.failed"})
        assert events[-1]["type"] == "answer.done", events[-1]
        answers.append(events[-1]["message"]["text"])
    # The model saw the whole conversation (trimmed to its budget) at every turn.
    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=saved["conversation"]["id"])
    count = await database_sync_to_async(conversation.messages.filter(author=Message.Author.BOT).count)()
    assert count == 8
    assert answers[-1] == corpus.intent(EIGHT_TURNS[-1]).reply, answers
    assert conversation.status == Conversation.Status.BOT
    await customer.disconnect()


async def test_asking_for_a_person_hands_the_conversation_off_with_the_models_reason(live_worker):
    corpus = load_corpus()
    customer, _ = await new_customer()
    saved = await send_message(customer, corpus.intent("order_status").train[0], client_id="a")
    await collect_until(customer, {"answer.done"})
    await send_message(customer, "I want to speak to a real person", client_id="b")
    events = await collect_until(customer, {"answer.done"})
    shown = "".join(e["text"] for e in events if e["type"] == "answer.delta")
    done = events[-1]["message"]
    assert done["text"] == corpus.intent("human_agent").reply
    assert "<handoff>" not in shown and "handoff>" not in done["text"]  # the action is never shown
    updated = await collect_until(customer, {"conversation.updated"}, timeout=10)
    assert updated[-1]["conversation"]["status"] == "waiting_for_agent"

    @database_sync_to_async
    def stored():
        conversation = Conversation.objects.get(public_id=saved["conversation"]["id"])
        return conversation, conversation.messages.get(pk=done["id"])

    conversation, message = await stored()
    assert conversation.handoff_reason == Conversation.HandoffReason.BOT_HANDOFF
    assert conversation.handoff_detail.startswith("customer_request")
    assert message.text == done["text"] and not message.no_answer
    await customer.disconnect()
