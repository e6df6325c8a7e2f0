"""The desk's writes: the handoff and its reasons, the atomic claim, the owner's replies, notes,
suggestions, hand back and resolve, auto-assignment, and the two races with the bot's answer."""

from __future__ import annotations

import threading
import time

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from chatbot.conversations import selectors
from chatbot.conversations.models import AgentProfile, Conversation, Generation, Message, Note
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services import customer, desk, generations
from chatbot.desk import selectors as desk_selectors
from chatbot.desk.presence import PRESENCE_KEY, presence_touch
from chatbot.queues import generation_queue
from chatbot.redis_client import cancel_key, get_redis
from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def served(redis_client):
    """A live worker's heartbeat, so that answers are handed to the broker (the real Redis) as
    in production; the queued tasks are dropped after the test (no worker runs here)."""
    status = WorkerStatus(
        name="desk-test",
        variants={v: {"state": "ready"} for v in ("gptq-int4", "fp16")},
        running=0,
        waiting=0,
        reported_at=time.time(),
    )
    redis_client.set(heartbeat_key(status.name), status.encode(), ex=60)
    yield
    heartbeat_delete(status.name)
    redis_client.delete(PRESENCE_KEY, *(generation_queue(v) for v in ("gptq-int4", "fp16")))


@pytest.fixture
def make_agent(django_user_model):
    def make(username: str, first_name: str = "") -> object:
        user = django_user_model.objects.create_user(username, first_name=first_name, is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
        return django_user_model.objects.get(pk=user.pk)  # a fresh permission cache

    return make


def post(conversation=None, text="Where is my order?", client_id="c1") -> customer.PostResult:
    return customer.customer_message_post(visitor_id="v1", conversation=conversation, text=text, client_id=client_id)


def fresh(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_related("assigned_agent").get(pk=conversation.pk)


def test_the_customer_asks_for_a_person_the_answer_in_progress_stops_and_the_bot_goes_silent():
    first = post()
    assert first.generation.status == Generation.Status.PENDING
    conversation = customer.customer_handoff_request(visitor_id="v1", conversation=first.conversation)
    assert conversation.status == Conversation.Status.WAITING_FOR_AGENT
    assert conversation.handoff_reason == Conversation.HandoffReason.CUSTOMER_REQUEST
    assert conversation.escalated_at is not None
    assert Generation.objects.get(pk=first.generation.pk).status == Generation.Status.CANCELLED
    assert get_redis().get(cancel_key(first.generation.pk)) == "1"
    # While waiting for a person the bot answers nothing, and asking again changes nothing.
    assert post(conversation=conversation, text="hello?", client_id="c2").generation is None
    escalated = conversation.escalated_at
    assert customer.customer_handoff_request(visitor_id="v1", conversation=conversation).escalated_at == escalated
    # A person asked for before writing anything: a conversation of its own.
    alone = customer.customer_handoff_request(visitor_id="v2", conversation=None)
    assert alone.status == Conversation.Status.WAITING_FOR_AGENT and alone.visitor_id == "v2"


def test_an_answer_that_fails_for_good_hands_the_conversation_to_a_person():
    result = post()
    generation = Generation.objects.get(pk=result.generation.pk)
    generations.generation_fail(generation=generation, error="gave up after 2 attempts (worker lost)")
    conversation = fresh(result.conversation)
    assert conversation.status == Conversation.Status.WAITING_FOR_AGENT
    assert conversation.handoff_reason == Conversation.HandoffReason.BOT_FAILED
    assert "gave up" in conversation.handoff_detail


def test_no_worker_at_all_hands_the_conversation_to_a_person(redis_client):
    heartbeat_delete("desk-test")
    result = post()
    assert result.unavailable
    assert fresh(result.conversation).handoff_reason == Conversation.HandoffReason.BOT_FAILED


def answer(result: customer.PostResult, text: str, *, no_answer: bool = False) -> Message | None:
    generations.generation_claim(generation_id=result.generation.pk, worker="w1")
    return generations.generation_complete(
        generation_id=result.generation.pk, text=text, reasoning="r", measures={}, no_answer=no_answer
    )


def test_two_no_answers_in_a_row_hand_off_and_an_answer_between_them_does_not():
    first = post()
    answer(first, "Sorry, I don't have an answer to that.", no_answer=True)
    assert not desk.conversation_handoff_if_no_answer_twice(conversation=first.conversation)
    second = post(conversation=first.conversation, text="what about returns?", client_id="c2")
    answer(second, "Returns are free within 30 days.")
    third = post(conversation=first.conversation, text="and exchanges?", client_id="c3")
    answer(third, "Sorry, I don't have an answer to that.", no_answer=True)
    assert not desk.conversation_handoff_if_no_answer_twice(conversation=first.conversation)
    assert fresh(first.conversation).status == Conversation.Status.BOT
    fourth = post(conversation=first.conversation, text="hello??", client_id="c4")
    stored = answer(fourth, "Sorry, I don't have an answer to that.", no_answer=True)
    assert stored.no_answer
    assert desk.conversation_handoff_if_no_answer_twice(conversation=first.conversation)
    assert fresh(first.conversation).handoff_reason == Conversation.HandoffReason.NO_ANSWER_TWICE


def test_of_two_agents_claiming_at_once_exactly_one_wins_and_the_other_hears_who(make_agent):
    kim, lee = make_agent("kim", "Kim"), make_agent("lee", "Lee")
    conversation = customer.customer_handoff_request(visitor_id="v1", conversation=None)
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def claim(agent) -> None:
        start.wait()
        try:
            desk.conversation_claim(conversation=conversation, agent=agent)
            outcomes[agent.username] = "won"
        except InvalidInput as exc:
            outcomes[agent.username] = f"{exc.code}: {exc.detail}"
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(agent,)) for agent in (kim, lee)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values())[1] == "won"
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    loser_outcome = next(outcome for outcome in outcomes.values() if outcome != "won")
    assert loser_outcome == f"already_claimed: {winner.title()} took this conversation over already."
    conversation = fresh(conversation)
    assert conversation.assigned_agent.username == winner
    assert Message.objects.filter(author=Message.Author.SYSTEM).count() == 1  # one "joined" notice


def test_taking_over_from_the_bot_records_the_takeover_and_cancels_the_answer(make_agent):
    kim = make_agent("kim", "Kim")
    result = post()
    generations.generation_claim(generation_id=result.generation.pk, worker="w1")
    desk.conversation_claim(conversation=result.conversation, agent=kim)
    conversation = fresh(result.conversation)
    assert (conversation.status, conversation.handoff_reason) == (
        Conversation.Status.WITH_AGENT,
        Conversation.HandoffReason.AGENT_TAKEOVER,
    )
    assert Generation.objects.get(pk=result.generation.pk).status == Generation.Status.CANCELLED
    # The first race: the answer in flight ends after the takeover, and nothing of it is stored.
    assert (
        generations.generation_complete(generation_id=result.generation.pk, text="late", reasoning="", measures={})
        is None
    )
    assert not Message.objects.filter(author=Message.Author.BOT).exists()


def test_the_worker_checks_the_owner_again_before_it_stores_an_answer(make_agent):
    """The second race: the owner changed and the answer was not cancelled (a takeover whose
    cancel has not landed); the worker's final write sees the owner and stores nothing."""
    kim = make_agent("kim", "Kim")
    result = post()
    generations.generation_claim(generation_id=result.generation.pk, worker="w1")
    Conversation.objects.filter(pk=result.conversation.pk).update(
        assigned_agent=kim, status=Conversation.Status.WITH_AGENT
    )
    assert (
        generations.generation_complete(generation_id=result.generation.pk, text="late", reasoning="", measures={})
        is None
    )
    assert not Message.objects.filter(author=Message.Author.BOT).exists()
    assert Generation.objects.get(pk=result.generation.pk).status == Generation.Status.CANCELLED


def test_only_the_owner_replies_and_refusals_store_nothing(make_agent):
    kim, lee = make_agent("kim", "Kim"), make_agent("lee", "Lee")
    conversation = customer.customer_handoff_request(visitor_id="v1", conversation=post().conversation)
    with pytest.raises(InvalidInput) as refused:
        desk.agent_message_post(conversation=conversation, agent=kim, text="Hi", client_id="a1")
    assert refused.value.code == "not_claimed"
    desk.conversation_claim(conversation=conversation, agent=kim)
    with pytest.raises(InvalidInput) as refused:
        desk.agent_message_post(conversation=conversation, agent=lee, text="Hi", client_id="a1")
    assert (refused.value.code, refused.value.detail) == ("not_yours", "Kim handles this conversation, not you.")
    for text in ("", "   ", "x" * 2001, None):
        with pytest.raises(InvalidInput):
            desk.agent_message_post(conversation=conversation, agent=kim, text=text, client_id="a1")
    assert not Message.objects.filter(author=Message.Author.AGENT).exists()

    first = desk.agent_message_post(conversation=conversation, agent=kim, text=" Hi, I'm Kim. ", client_id="a1")
    again = desk.agent_message_post(conversation=conversation, agent=kim, text="Hi, I'm Kim.", client_id="a1")
    assert first.created and not again.created and again.message == first.message
    assert (first.message.text, first.message.author_user) == ("Hi, I'm Kim.", kim)
    replied = fresh(conversation).first_agent_reply_at
    desk.agent_message_post(conversation=conversation, agent=kim, text="Anything else?", client_id="a2")
    assert fresh(conversation).first_agent_reply_at == replied  # the first reply's time stays
    # The customer's history has the reply; the model's prompt counts it as an assistant turn.
    later = post(conversation=conversation, text="thanks", client_id="c9")
    assert later.generation is None


def test_notes_stay_with_staff(make_agent):
    kim = make_agent("kim", "Kim")
    conversation = post().conversation
    desk.note_add(conversation=conversation, agent=kim, text="VIP: refund without questions")
    assert Note.objects.get().author == kim
    history = selectors.history_frame(conversation=conversation)
    assert "VIP" not in repr(history)
    detail = desk_selectors.conversation_detail_frame(conversation=fresh(conversation))
    assert [note["text"] for note in detail["notes"]] == ["VIP: refund without questions"]
    generation = post(conversation=conversation, text="and?", client_id="c2").generation
    assert "VIP" not in repr(selectors.prompt_turns(generation=generation))


def test_hand_back_to_the_bot_then_resolve(make_agent):
    kim, lee = make_agent("kim", "Kim"), make_agent("lee", "Lee")
    conversation = customer.customer_handoff_request(visitor_id="v1", conversation=post().conversation)
    desk.conversation_claim(conversation=conversation, agent=kim)
    with pytest.raises(InvalidInput) as refused:
        desk.conversation_hand_back(conversation=conversation, agent=lee)
    assert refused.value.code == "not_yours"
    desk.conversation_hand_back(conversation=conversation, agent=kim)
    conversation = fresh(conversation)
    assert (conversation.status, conversation.assigned_agent) == (Conversation.Status.BOT, None)
    assert Message.objects.filter(author=Message.Author.SYSTEM, text=desk.HANDED_BACK_TEXT).exists()
    assert post(conversation=conversation, text="one more question", client_id="c2").generation is not None

    with pytest.raises(InvalidInput) as refused:
        desk.conversation_resolve(conversation=conversation, agent=kim)
    assert refused.value.code == "not_claimed"
    desk.conversation_claim(conversation=conversation, agent=kim)
    desk.conversation_resolve(conversation=conversation, agent=kim)
    conversation = fresh(conversation)
    assert conversation.status == Conversation.Status.RESOLVED
    assert (conversation.resolved_by, conversation.resolved_by_agent) == (Conversation.ResolvedBy.AGENT, kim)
    with pytest.raises(InvalidInput) as refused:
        desk.agent_message_post(conversation=conversation, agent=kim, text="hi", client_id="a9")
    assert refused.value.code == "conversation_closed"
    with pytest.raises(InvalidInput) as refused:
        desk.conversation_claim(conversation=conversation, agent=lee)
    assert refused.value.code == "conversation_closed"


def test_a_suggestion_is_a_generation_of_its_own_that_runs_while_an_agent_owns_the_conversation(make_agent):
    kim = make_agent("kim", "Kim")
    conversation = customer.customer_handoff_request(visitor_id="v1", conversation=None)
    desk.conversation_claim(conversation=conversation, agent=kim)
    with pytest.raises(InvalidInput) as refused:
        desk.suggestion_request(conversation=conversation, agent=kim)
    assert refused.value.code == "no_customer_message"
    post(conversation=fresh(conversation), text="Where is my parcel?", client_id="c1")
    suggestion = desk.suggestion_request(conversation=conversation, agent=kim)
    assert (suggestion.kind, suggestion.requested_by, suggestion.status) == (
        Generation.Kind.SUGGESTION,
        kim,
        Generation.Status.PENDING,
    )
    claimed = generations.generation_claim(generation_id=suggestion.pk, worker="w1")
    assert claimed is not None and claimed.status == Generation.Status.RUNNING
    done = generations.generation_suggestion_complete(generation_id=suggestion.pk, text="It ships today.")
    assert (done.text, done.status) == ("It ships today.", Generation.Status.DONE)
    assert not Message.objects.filter(author=Message.Author.BOT).exists()  # never sent by itself
    # A customer's new message does not cancel an agent's suggestion in progress; the agent can.
    other = desk.suggestion_request(conversation=conversation, agent=kim)
    post(conversation=fresh(conversation), text="hello?", client_id="c2")
    assert Generation.objects.get(pk=other.pk).status == Generation.Status.PENDING
    lee = make_agent("lee", "Lee")
    with pytest.raises(InvalidInput) as refused:
        desk.suggestion_cancel(conversation=conversation, agent=lee, generation_id=other.pk)
    assert refused.value.code == "suggestion_not_found"
    assert desk.suggestion_cancel(conversation=conversation, agent=kim, generation_id=other.pk)
    assert Generation.objects.get(pk=other.pk).status == Generation.Status.CANCELLED
    assert get_redis().get(cancel_key(other.pk)) == "1"  # it leaves the worker's batch
    assert not desk.suggestion_cancel(conversation=conversation, agent=kim, generation_id=other.pk)


def test_auto_assignment_goes_round_robin_among_online_agents_under_capacity(settings, make_agent):
    settings.DESK_AUTO_ASSIGN = True
    settings.DESK_AGENT_CAPACITY = 1
    kim, lee, away = make_agent("kim", "Kim"), make_agent("lee", "Lee"), make_agent("ola", "Ola")
    for agent in (kim, lee, away):
        presence_touch(user_id=agent.pk, channel_name=f"socket-{agent.pk}")
    desk.agent_presence_set(agent=away, presence=AgentProfile.Presence.AWAY)
    owners = []
    for visitor in ("v1", "v2", "v3"):
        conversation = customer.customer_handoff_request(visitor_id=visitor, conversation=None)
        owners.append(fresh(conversation).assigned_agent)
    assert {owners[0].username, owners[1].username} == {"kim", "lee"}  # one each, the away agent none
    assert owners[2] is None  # both at capacity: it waits in the queue
    waiting = Conversation.objects.get(visitor_id="v3")
    assert desk_selectors.queue_position(conversation=waiting) == 1


def test_the_queue_tells_each_waiting_customer_their_place_and_who_is_online(make_agent, settings):
    kim = make_agent("kim", "Kim")
    first = customer.customer_handoff_request(visitor_id="v1", conversation=None)
    second = customer.customer_handoff_request(visitor_id="v2", conversation=None)
    assert desk_selectors.customer_queue_payload(conversation=second) == {
        "position": 2,
        "agents_online": 0,
        "support_hours": settings.SUPPORT_HOURS,
    }
    presence_touch(user_id=kim.pk, channel_name="socket-1")
    desk.conversation_claim(conversation=first, agent=kim)
    assert desk_selectors.customer_queue_payload(conversation=fresh(second))["position"] == 1
    assert desk_selectors.customer_queue_payload(conversation=fresh(second))["agents_online"] == 1
    assert desk_selectors.customer_queue_payload(conversation=fresh(first)) is None


def test_the_desk_lists_sort_and_filter_conversations(make_agent):
    kim = make_agent("kim", "Kim")
    bot = post().conversation
    older = customer.customer_handoff_request(visitor_id="v2", conversation=None)
    newer = customer.customer_handoff_request(visitor_id="v3", conversation=None)
    mine = customer.customer_handoff_request(visitor_id="v4", conversation=None)
    desk.conversation_claim(conversation=mine, agent=kim)
    lists = desk_selectors.desk_lists(agent=kim)
    assert [c["id"] for c in lists["waiting"]] == [older.public_id, newer.public_id]
    assert [c["id"] for c in lists["mine"]] == [mine.public_id]
    assert [c["id"] for c in lists["bot"]] == [bot.public_id]
    assert lists["bot"][0]["last_message"] == "Where is my order?"
    assert lists["waiting"][0]["handoff_reason_label"] == "The customer asked for a person"
    assert lists["resolved"] == []
