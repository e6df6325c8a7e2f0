"""The reasoning budget and the answer's allowance through the real worker and the customer
socket: the time to the first answer token is stored, a budget cuts the reasoning and the model
answers, and an allowance that ends inside the reasoning gives the customer a clear message and
a person."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from chatbot.conversations.models import Conversation, Generation, Message
from inference_worker.generation import NO_ANSWER_IN_TIME_TEXT
from tests.conftest import WorkerProcess
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def ask(text: str) -> tuple[list[dict], Message]:
    communicator, _ = await new_customer()
    await send_message(communicator, text)
    events = await collect_until(communicator, {"answer.done", "generation.failed", "error"})
    assert events[-1]["type"] == "answer.done", events
    await communicator.disconnect()
    message = await database_sync_to_async(Message.objects.select_related("conversation").get)(
        pk=events[-1]["message"]["id"]
    )
    return events, message


def handed_off(conversation: Conversation, timeout: float = 10) -> Conversation:
    """The conversation once the worker has handed it to the desk (just after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        conversation.refresh_from_db()
        if conversation.status != Conversation.Status.BOT or time.monotonic() > deadline:
            return conversation
        time.sleep(0.1)


def answer_text(events: list[dict]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "answer.delta")


def test_the_time_to_the_first_answer_token_is_stored_beside_the_first_token(live_worker):
    events, message = async_to_sync(ask)("How do I reset my password?")
    assert not message.reasoning_cut and not message.no_answer
    assert message.text and answer_text(events) == message.text
    assert message.time_to_first_token_ms is not None
    assert message.time_to_first_token_ms <= message.time_to_first_answer_token_ms <= message.latency_ms
    assert message.reasoning_tokens > 0


def test_a_budget_cuts_the_reasoning_and_the_model_answers_and_a_short_allowance_hands_off(live_worker, tmp_path):
    live_worker.stop()  # only the workers with these settings may answer
    worker = None
    try:
        worker = WorkerProcess(
            "budget-worker",
            tmp_path / "budget.log",
            WORKER_VARIANTS="gptq-int4",
            REASONING_BUDGET_TOKENS="4",
            MAX_NEW_TOKENS="64",
        ).start()
        events, message = async_to_sync(ask)("How do I reset my password?")
        assert message.reasoning_cut and message.reasoning_tokens == 4
        assert message.reasoning and len(message.reasoning.split()) <= 4, message.reasoning
        assert message.text and not message.no_answer
        assert answer_text(events) == message.text
        assert message.reasoning not in message.text and "think>" not in message.text
        assert message.time_to_first_answer_token_ms >= message.time_to_first_token_ms
        assert message.conversation.status == Conversation.Status.BOT
        worker.stop()

        worker = WorkerProcess(
            "allowance-worker", tmp_path / "allowance.log", WORKER_VARIANTS="gptq-int4", MAX_NEW_TOKENS="6"
        ).start()
        events, message = async_to_sync(ask)("How do I reset my password?")
        assert message.text == NO_ANSWER_IN_TIME_TEXT and message.no_answer
        assert message.time_to_first_answer_token_ms is None and not message.reasoning_cut
        assert answer_text(events) == ""  # the reasoning never reached the customer
        conversation = handed_off(message.conversation)
        assert conversation.status == Conversation.Status.WAITING_FOR_AGENT
        assert conversation.handoff_reason == Conversation.HandoffReason.NO_ANSWER_IN_TIME
        assert not Generation.objects.filter(status__in=[Generation.Status.PENDING, Generation.Status.RUNNING]).exists()
    finally:
        if worker is not None:
            worker.stop()
        live_worker.start()
