"""Services and selectors of conversations: what they write and what they refuse."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from chatbot.conversations import protocol, selectors
from chatbot.conversations.models import Conversation, Generation, Message
from chatbot.conversations.services import customer, desk, generations
from chatbot.redis_client import cancel_key, get_redis

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def served(request, redis_client):
    """A live worker's heartbeat for both variants, so that posted messages are handed to the
    broker (the real Redis) as in production; the tasks it queues are dropped after the test,
    since no worker runs here. Tests that ask for `no_worker` get none."""
    import time

    from chatbot.queues import generation_queue
    from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_key

    if "no_worker" in request.fixturenames:
        yield
        return
    status = WorkerStatus(
        name="svc-test",
        variants={v: {"state": "ready"} for v in ("gptq-int4", "fp16")},
        running=0,
        waiting=0,
        reported_at=time.time(),
    )
    redis_client.set(heartbeat_key(status.name), status.encode(), ex=60)
    yield
    heartbeat_delete(status.name)
    redis_client.delete(*(generation_queue(v) for v in ("gptq-int4", "fp16")))


@pytest.fixture
def no_worker():
    """No worker's heartbeat: every answer fails at once (see `served`)."""


def post(conversation=None, text="Where is my order?", client_id="c1", visitor_id="v1") -> customer.PostResult:
    return customer.customer_message_post(
        visitor_id=visitor_id, conversation=conversation, text=text, client_id=client_id
    )


def statements_in_transaction(action) -> list[str]:
    """The SQL statements `action` runs between BEGIN and COMMIT."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        action()
    statements = [q["sql"] for q in queries.captured_queries]
    return statements[statements.index("BEGIN") + 1 : statements.index("COMMIT")]


def statement_kinds(statements: list[str]) -> list[tuple[str, str]]:
    """(verb, first table named) of each statement."""
    return [re.match(r'(\w+)(?: INTO)? .*?"(\w+)"', sql).group(1, 2) for sql in statements]


def test_post_saves_the_message_and_a_generation_on_the_active_variant(no_worker):
    result = post()
    assert result.created
    assert result.message.author == Message.Author.CUSTOMER
    assert result.conversation.visitor_id == "v1"
    assert result.generation.model_variant == "gptq-int4"
    assert result.generation.prompt_message == result.message
    # No worker runs in this test: the generation is failed, the message is kept.
    assert result.unavailable
    assert Message.objects.count() == 1


def test_the_first_message_of_a_new_conversation_looks_nothing_up():
    """The first message is on the way to the first token: a new conversation has no earlier
    message with this client id and no answer to cancel, so its transaction only writes (and
    reads the active variant)."""
    assert statement_kinds(statements_in_transaction(post)) == [
        ("INSERT", "conversations_conversation"),
        ("INSERT", "conversations_message"),
        ("UPDATE", "conversations_conversation"),
        ("SELECT", "serving_servingstate"),
        ("INSERT", "conversations_generation"),
    ]


def test_a_later_message_looks_up_a_resend_and_answers_to_cancel_in_one_statement():
    """On the way to every first token: after the conversation's lock, one read says whether the
    message is a resend and whether an answer is still running; with neither, nothing is cancelled."""
    first = post()
    Generation.objects.filter(pk=first.generation.pk).update(status=Generation.Status.DONE)
    lock, lookup, *writes = statements_in_transaction(
        lambda: post(conversation=first.conversation, text="And when?", client_id="c2")
    )
    assert lock.startswith('SELECT "conversations_conversation"') and "FOR UPDATE" in lock
    assert lookup.startswith("SELECT (SELECT") and '"conversations_message"' in lookup
    assert 'EXISTS (SELECT 1 FROM "conversations_generation"' in lookup
    assert statement_kinds(writes) == [
        ("INSERT", "conversations_message"),
        ("UPDATE", "conversations_conversation"),
        ("SELECT", "serving_servingstate"),
        ("INSERT", "conversations_generation"),
    ]


def test_a_resent_message_is_stored_once_and_returns_the_first_copy():
    first = post(client_id="c1")
    again = post(conversation=first.conversation, text="Where is my order?", client_id="c1")
    assert not again.created and again.message == first.message and again.generation == first.generation
    assert Message.objects.filter(client_id="c1").count() == 1


def test_when_redis_is_down_the_message_is_still_saved(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    get_redis.cache_clear()
    try:
        result = post()
    finally:
        get_redis.cache_clear()
    assert Message.objects.filter(pk=result.message.pk).exists()
    generation = Generation.objects.get()
    assert generation.status == Generation.Status.FAILED
    assert "unreachable" in generation.error
    assert result.unavailable


def test_a_new_message_cancels_the_answer_in_progress_and_flags_the_worker():
    first = post()
    Generation.objects.filter(pk=first.generation.pk).update(status=Generation.Status.RUNNING, error="")
    post(conversation=first.conversation, text="never mind", client_id="c2")
    cancelled = Generation.objects.get(pk=first.generation.pk)
    assert cancelled.status == Generation.Status.CANCELLED
    assert cancelled.error == "the customer sent a new message"
    assert get_redis().get(cancel_key(cancelled.pk)) == "1"


def test_claim_is_idempotent_and_complete_respects_a_cancel():
    result = post()
    generation = result.generation
    Generation.objects.filter(pk=generation.pk).update(status=Generation.Status.PENDING, error="")
    claimed = generations.generation_claim(generation_id=generation.pk, worker="w1")
    assert claimed.status == Generation.Status.RUNNING and claimed.attempts == 1
    generations.generation_cancel(generation=claimed, reason="stopped")
    assert generations.generation_complete(generation_id=generation.pk, text="late", reasoning="r", measures={}) is None
    assert not Message.objects.filter(author=Message.Author.BOT).exists()
    assert generations.generation_claim(generation_id=generation.pk, worker="w1") is None  # ended: skipped
    assert generations.generation_claim(generation_id=999_999, worker="w1") is None


def pending_generation() -> Generation:
    """A posted message's generation, PENDING as a worker would find it."""
    generation = post().generation
    Generation.objects.filter(pk=generation.pk).update(status=Generation.Status.PENDING, error="")
    return generation


def test_a_claim_on_postgresql_is_one_statement_and_returns_what_the_orm_would():
    """The claim is on the way to every first token: its usual case is one UPDATE ... RETURNING,
    and what it returns is the stored generation with its conversation."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    generation = pending_generation()
    with CaptureQueriesContext(connection) as queries:
        claimed = generations.generation_claim(generation_id=generation.pk, worker="w1")
        group = claimed.conversation.group_name  # loaded with the claim: no query of its own
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["UPDATE"]
    stored = Generation.objects.select_related("conversation").get(pk=generation.pk)
    assert (stored.status, stored.attempts, stored.worker) == (Generation.Status.RUNNING, 1, "w1")
    fields = [f.attname for f in Generation._meta.concrete_fields]
    assert [getattr(claimed, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert group == stored.conversation.group_name and claimed.conversation == stored.conversation
    assert claimed.created_at.tzinfo is not None and claimed.started_at == stored.started_at


def test_a_redelivered_claim_of_a_running_generation_counts_an_attempt_then_gives_up(settings):
    """A worker died mid-answer and the task came back: run it again, up to the last attempt."""
    settings.GENERATION_MAX_ATTEMPTS = 2
    generation = pending_generation()
    assert generations.generation_claim(generation_id=generation.pk, worker="w1").attempts == 1
    assert generations.generation_claim(generation_id=generation.pk, worker="w2").attempts == 2
    assert generations.generation_claim(generation_id=generation.pk, worker="w3") is None
    generation.refresh_from_db()
    assert generation.status == Generation.Status.FAILED and "gave up after 2 attempts" in generation.error


def test_a_claim_in_a_conversation_an_agent_took_over_cancels_the_generation(django_user_model):
    agent = django_user_model.objects.create_user("agent", is_staff=True)
    generation = pending_generation()
    Conversation.objects.filter(pk=generation.conversation_id).update(
        assigned_agent=agent, status=Conversation.Status.WITH_AGENT
    )
    assert generations.generation_claim(generation_id=generation.pk, worker="w1") is None
    generation.refresh_from_db()
    assert generation.status == Generation.Status.CANCELLED and generation.attempts == 0
    assert get_redis().get(cancel_key(generation.pk)) == "1"


def test_complete_stores_the_answer_with_its_reasoning_and_measures():
    result = post()
    Generation.objects.filter(pk=result.generation.pk).update(status=Generation.Status.PENDING, error="")
    generations.generation_claim(generation_id=result.generation.pk, worker="w1")
    message = generations.generation_complete(
        generation_id=result.generation.pk,
        text="It ships in 2 days.",
        reasoning="Order status question.",
        measures={"completion_tokens": 12, "time_to_first_token_ms": 50.0},
    )
    assert (message.text, message.reasoning, message.model_variant) == (
        "It ships in 2 days.",
        "Order status question.",
        "gptq-int4",
    )
    assert Generation.objects.get(pk=result.generation.pk).status == Generation.Status.DONE
    assert "reasoning" not in protocol.message_payload(message)


def test_orphans_of_a_dead_worker_are_requeued_then_failed_after_the_last_attempt(no_worker):
    result = post()
    old = timezone.now() - timezone.timedelta(minutes=5)
    Generation.objects.filter(pk=result.generation.pk).update(
        status=Generation.Status.RUNNING, worker="dead", started_at=old, attempts=1, error=""
    )
    # The sweeping worker never takes its own answers for orphans, even when its heartbeat lapsed.
    assert generations.generation_requeue_orphans(alive=["dead"]) == 0
    assert Generation.objects.get(pk=result.generation.pk).status == Generation.Status.RUNNING
    assert generations.generation_requeue_orphans() == 1
    # No live worker serves the variant here, so the requeue itself fails it, with the customer told.
    assert Generation.objects.get(pk=result.generation.pk).status == Generation.Status.FAILED
    Generation.objects.filter(pk=result.generation.pk).update(
        status=Generation.Status.RUNNING, worker="dead", started_at=old, attempts=2
    )
    assert generations.generation_requeue_orphans() == 0
    generation = Generation.objects.get(pk=result.generation.pk)
    assert generation.status == Generation.Status.FAILED and "lost mid-answer" in generation.error


def test_a_worker_gives_back_an_answer_its_engine_lost_until_the_last_attempt(settings):
    """The worker lives but its engine process died: the generation is requeued (the next claim
    counts the attempt), only by the worker that holds it, and FAILED once out of attempts."""
    settings.GENERATION_MAX_ATTEMPTS = 2
    generation = pending_generation()
    generations.generation_claim(generation_id=generation.pk, worker="w1")
    assert generations.generation_requeue(generation_id=generation.pk, worker="w2", lost="w2's engine") is None
    assert Generation.objects.get(pk=generation.pk).status == Generation.Status.RUNNING
    assert generations.generation_requeue(generation_id=generation.pk, worker="w1", lost="w1's engine") == "requeued"
    assert Generation.objects.get(pk=generation.pk).status == Generation.Status.PENDING
    assert generations.generation_claim(generation_id=generation.pk, worker="w1").attempts == 2
    assert generations.generation_requeue(generation_id=generation.pk, worker="w1", lost="w1's engine") == "failed"
    generation.refresh_from_db()
    assert generation.status == Generation.Status.FAILED
    assert generation.error == "w1's engine was lost mid-answer"
    assert generations.generation_requeue(generation_id=generation.pk, worker="w1", lost="w1's engine") is None


def test_an_agent_owned_conversation_gets_no_bot_answer(django_user_model):
    agent = django_user_model.objects.create_user("agent", is_staff=True)
    conversation = Conversation.objects.create(
        visitor_id="v1", status=Conversation.Status.WITH_AGENT, assigned_agent=agent
    )
    result = post(conversation=conversation)
    assert result.generation is None
    assert Message.objects.count() == 1


def test_prompt_turns_follow_the_conversation_without_system_notices():
    first = post(text="Do you ship to Canada?")
    conversation = first.conversation
    Message.objects.create(conversation=conversation, author=Message.Author.BOT, text="Yes.", reasoning="secret")
    Message.objects.create(conversation=conversation, author=Message.Author.SYSTEM, text="Agent joined")
    second = post(conversation=conversation, text="How long does it take?", client_id="c2")
    assert selectors.prompt_turns(generation=second.generation) == [
        {"role": "user", "content": "Do you ship to Canada?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "How long does it take?"},
    ]


def test_prompt_turns_stop_at_the_generation_s_message_and_keep_the_latest_history(settings):
    settings.HISTORY_MAX_MESSAGES = 3
    first = post(text="one")
    conversation = first.conversation
    for text in ("two", "three"):
        Message.objects.create(conversation=conversation, author=Message.Author.BOT, text=text)
    second = post(conversation=conversation, text="four", client_id="c2")
    post(conversation=conversation, text="five, sent after", client_id="c3")
    assert selectors.prompt_turns(generation=second.generation) == [
        {"role": "assistant", "content": "two\nthree"},
        {"role": "user", "content": "four"},
    ]


def test_an_agent_taking_over_cancels_the_answer_in_progress_and_tells_the_customer(django_user_model):
    agent = django_user_model.objects.create_user("sam", first_name="Sam", is_staff=True)
    result = post()
    Generation.objects.filter(pk=result.generation.pk).update(status=Generation.Status.RUNNING, error="")
    conversation = desk.conversation_claim(conversation=result.conversation, agent=agent)
    assert conversation.status == Conversation.Status.WITH_AGENT and conversation.assigned_agent == agent
    generation = Generation.objects.get(pk=result.generation.pk)
    assert generation.status == Generation.Status.CANCELLED
    assert get_redis().get(cancel_key(generation.pk)) == "1"  # the worker drops it from the batch
    notice = Message.objects.get(author=Message.Author.SYSTEM)
    assert notice.text == "Sam from our support team joined the conversation."
    # From now on the bot stays silent.
    assert post(conversation=conversation, text="hello?", client_id="c2").generation is None
