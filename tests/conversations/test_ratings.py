"""Resolution by the customer and by the bot's idle sweep, and the customer's rating: asked once,
refused with a clear error and nothing stored when it cannot be taken."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from chatbot.conversations.models import Conversation, Message, Rating
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services import desk, ratings
from tests.conversations.test_consumers import new_customer, receive_handoff, send_message

pytestmark = pytest.mark.django_db(transaction=True)


def resolved_conversation(visitor_id: str = "v1", **fields) -> Conversation:
    return Conversation.objects.create(
        visitor_id=visitor_id, status=Conversation.Status.RESOLVED, resolved_at=timezone.now(), **fields
    )


@pytest.mark.parametrize(
    ("score", "comment", "code"),
    [
        (0, "", "invalid_score"),
        (6, "", "invalid_score"),
        ("5", "", "invalid_score"),
        (True, "", "invalid_score"),
        (4.5, "", "invalid_score"),
        (None, "", "invalid_score"),
        (5, "x" * 1001, "comment_too_long"),
        (5, ["nice"], "malformed"),
        (5, "nul\x00", "malformed"),
    ],
)
def test_bad_ratings_are_refused_and_nothing_is_stored(score, comment, code):
    conversation = resolved_conversation()
    with pytest.raises(InvalidInput) as refused:
        ratings.rating_submit(visitor_id="v1", conversation_id=conversation.public_id, score=score, comment=comment)
    assert refused.value.code == code
    assert not Rating.objects.exists()


def test_a_rating_needs_the_visitors_own_resolved_conversation_and_is_taken_once(django_user_model):
    open_one = Conversation.objects.create(visitor_id="v1")
    with pytest.raises(InvalidInput) as refused:
        ratings.rating_submit(visitor_id="v1", conversation_id=open_one.public_id, score=5)
    assert refused.value.code == "conversation_not_resolved"
    someone_elses = resolved_conversation(visitor_id="v2")
    for conversation_id in (someone_elses.public_id, "no-such-conversation", 42):
        with pytest.raises(InvalidInput) as refused:
            ratings.rating_submit(visitor_id="v1", conversation_id=conversation_id, score=5)
        assert refused.value.code in ("conversation_not_found", "malformed")
    mine = resolved_conversation()
    rating = ratings.rating_submit(visitor_id="v1", conversation_id=mine.public_id, score=4, comment="  quick  ")
    assert (rating.score, rating.comment, rating.credited_to, rating.agent) == (4, "quick", "bot", None)
    with pytest.raises(InvalidInput) as refused:
        ratings.rating_submit(visitor_id="v1", conversation_id=mine.public_id, score=1)
    assert refused.value.code == "already_rated"
    assert Rating.objects.get().score == 4
    kim = django_user_model.objects.create_user("kim", is_staff=True)
    by_kim = resolved_conversation(resolved_by=Conversation.ResolvedBy.AGENT, resolved_by_agent=kim)
    rating = ratings.rating_submit(visitor_id="v1", conversation_id=by_kim.public_id, score=2)
    assert (rating.credited_to, rating.agent) == ("agent", kim)


def test_the_bot_resolves_a_conversation_once_the_customer_is_quiet_after_its_answer(settings):
    settings.RESOLVE_AFTER_IDLE_MINUTES = 30
    long_ago = timezone.now() - timezone.timedelta(minutes=31)

    def conversation(last_author: str, at) -> Conversation:
        conversation = Conversation.objects.create(visitor_id="v1", last_message_at=at)
        Message.objects.create(conversation=conversation, author=Message.Author.CUSTOMER, text="hi")
        if last_author == "bot":
            Message.objects.create(conversation=conversation, author=Message.Author.BOT, text="Hello!")
        return conversation

    answered = conversation("bot", long_ago)
    unanswered = conversation("customer", long_ago)
    recent = conversation("bot", timezone.now())
    waiting = conversation("bot", long_ago)
    Conversation.objects.filter(pk=waiting.pk).update(status=Conversation.Status.WAITING_FOR_AGENT)
    assert desk.conversations_resolve_idle() == 1
    statuses = dict(Conversation.objects.values_list("pk", "status"))
    assert statuses[answered.pk] == Conversation.Status.RESOLVED
    assert Conversation.objects.get(pk=answered.pk).resolved_by == Conversation.ResolvedBy.BOT
    assert statuses[unanswered.pk] == statuses[recent.pk] == Conversation.Status.BOT
    assert statuses[waiting.pk] == Conversation.Status.WAITING_FOR_AGENT
    assert desk.conversations_resolve_idle() == 0


@pytest.mark.asyncio
async def test_the_customer_ends_the_chat_rates_it_and_a_reload_shows_it_rated():
    communicator, _ = await new_customer()
    saved = await send_message(communicator, "thanks, that's all")
    await communicator.receive_json_from()  # unavailable (no worker here)
    await receive_handoff(communicator)
    conversation_id = saved["conversation"]["id"]
    early = {"type": "rating.submit", "conversation_id": conversation_id, "score": 5}
    await communicator.send_json_to(early)
    assert (await communicator.receive_json_from())["code"] == "conversation_not_resolved"

    await communicator.send_json_to({"type": "conversation.resolve"})
    updated = await communicator.receive_json_from(timeout=5)
    while updated["type"] != "conversation.updated" or updated["conversation"]["status"] != "resolved":
        updated = await communicator.receive_json_from(timeout=5)
    await communicator.send_json_to(
        {"type": "rating.submit", "conversation_id": conversation_id, "score": 5, "comment": "<b>great</b>"}
    )
    saved_rating = await communicator.receive_json_from(timeout=5)
    while saved_rating["type"] != "rating.saved":
        saved_rating = await communicator.receive_json_from(timeout=5)
    assert saved_rating["rating"]["score"] == 5 and saved_rating["rating"]["comment"] == "<b>great</b>"
    await communicator.send_json_to({"type": "rating.submit", "conversation_id": conversation_id, "score": 1})
    refused = await communicator.receive_json_from(timeout=5)
    while refused["type"] != "error":
        refused = await communicator.receive_json_from(timeout=5)
    assert refused["code"] == "already_rated"
    await communicator.send_json_to({"type": "hello", "conversation_id": conversation_id})
    history = await communicator.receive_json_from(timeout=5)
    while history["type"] != "history":
        history = await communicator.receive_json_from(timeout=5)
    assert history["conversation"]["status"] == "resolved" and history["rating"]["score"] == 5
    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=conversation_id)
    assert conversation.resolved_by == Conversation.ResolvedBy.CUSTOMER
    await communicator.disconnect()
