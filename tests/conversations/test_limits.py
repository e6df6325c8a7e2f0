"""Limits per visitor and per address, kept in Redis (chatbot/conversations/limits.py): messages a
minute across all of a visitor's sockets, answers open at once across their conversations,
sockets open at once, new chat sessions per address and hour. A refusal is a documented
protocol error (or HTTP 429 for the page), stores nothing and leaves the socket usable."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone

from chatbot.conversations import limits
from chatbot.conversations.models import Conversation, Generation, Message
from chatbot.conversations.services import customer, generations
from tests.conftest import make_session
from tests.conversations.test_consumers import connect, counts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def answers_stay_open(monkeypatch):
    """Every answer is handed to a worker that has not taken it yet: it stays open (pending)."""
    monkeypatch.setattr(customer, "generation_enqueue", lambda *, generation, **kwargs: True)


async def customer_sockets(n: int = 1):
    cookie, visitor_id = await database_sync_to_async(make_session)()
    return [await connect(cookie) for _ in range(n)], visitor_id


async def send_message(communicator, text: str, client_id: str = "c1") -> dict:
    """The reply to a message: `message.saved` or an `error` (the cancellations of answers it
    replaced are skipped)."""
    await communicator.send_json_to({"type": "message.send", "text": text, "client_id": client_id})
    while True:
        frame = await communicator.receive_json_from(timeout=5)
        if frame["type"] in ("message.saved", "error"):
            return frame


async def assert_usable(communicator) -> None:
    """The socket still answers (events of earlier answers that arrive meanwhile are skipped)."""
    await communicator.send_json_to({"type": "ping"})
    while (frame := await communicator.receive_json_from(timeout=5))["type"] != "pong":
        assert frame["type"] == "generation.cancelled"


# -- messages a minute, across every socket of the visitor ------------------------------------------
@pytest.mark.asyncio
async def test_a_visitor_s_messages_a_minute_count_across_all_their_sockets(settings, answers_stay_open):
    settings.VISITOR_MAX_MESSAGES_PER_MINUTE = 3
    (first, second), _ = await customer_sockets(2)
    for n in range(3):
        saved = await send_message(first, f"message {n}", client_id=f"c{n}")
        assert saved["type"] == "message.saved"
    refused = await send_message(first, "one more", client_id="c3")
    assert (refused["type"], refused["code"], refused["client_id"]) == ("error", "rate_limited", "c3")
    assert "3 messages" in refused["detail"]
    # Another socket of the same visitor, as a new tab (or a socket opened after a 4429 close).
    refused = await send_message(second, "from the other tab", client_id="c4")
    assert refused["code"] == "rate_limited"
    assert await counts() == (1, 3, 3)
    await assert_usable(first)
    await assert_usable(second)
    # Another visitor is not held back.
    ([other], _) = await customer_sockets()
    assert (await send_message(other, "hello"))["type"] == "message.saved"
    for communicator in (first, second, other):
        await communicator.disconnect()


@pytest.mark.asyncio
async def test_the_window_slides(settings, answers_stay_open, monkeypatch):
    settings.VISITOR_MAX_MESSAGES_PER_MINUTE = 1
    now = [1_000_000.0]
    monkeypatch.setattr(limits, "_now", lambda: now[0])
    ([socket], _) = await customer_sockets()
    assert (await send_message(socket, "one", client_id="a"))["type"] == "message.saved"
    now[0] += 59
    assert (await send_message(socket, "two", client_id="b"))["code"] == "rate_limited"
    now[0] += 2
    assert (await send_message(socket, "three", client_id="c"))["type"] == "message.saved"
    await socket.disconnect()


# -- answers open at once, across the visitor's conversations ---------------------------------------
@pytest.mark.asyncio
async def test_a_visitor_cannot_run_more_answers_at_once_than_the_limit(settings, answers_stay_open):
    assert settings.VISITOR_MAX_OPEN_ANSWERS == 2
    (socket, other_tab), _ = await customer_sockets(2)
    first = await send_message(socket, "first conversation", client_id="a")
    await socket.send_json_to({"type": "conversation.new"})
    await socket.receive_json_from()
    await send_message(socket, "second conversation", client_id="b")
    await socket.send_json_to({"type": "conversation.new"})
    await socket.receive_json_from()

    refused = await send_message(socket, "third conversation", client_id="c")
    assert (refused["code"], refused["client_id"]) == ("too_many_answers", "c")
    refused = await send_message(other_tab, "third, from another tab", client_id="d")
    assert refused["code"] == "too_many_answers"
    assert await counts() == (2, 2, 2)  # nothing stored, not even the conversation
    await assert_usable(socket)

    # A new message in a conversation whose answer runs replaces that answer: it is taken.
    await other_tab.send_json_to({"type": "hello", "conversation_id": first["conversation"]["id"]})
    await other_tab.receive_json_from()
    assert (await send_message(other_tab, "never mind, this instead", client_id="e"))["type"] == "message.saved"
    # Stopping an answer frees its place.
    replacing = await database_sync_to_async(Generation.objects.get)(prompt_message__client_id="e")
    await other_tab.send_json_to({"type": "generation.cancel"})
    while (await other_tab.receive_json_from(timeout=5)) != {
        "type": "generation.cancelled",
        "generation_id": replacing.pk,
    }:
        pass  # the replaced answer's cancellation may come first
    assert (await send_message(socket, "third conversation", client_id="c"))["type"] == "message.saved"
    await socket.disconnect()
    await other_tab.disconnect()


def test_an_answer_ending_in_the_worker_frees_its_place(answers_stay_open):
    x = customer.customer_message_post(visitor_id="v1", conversation=None, text="x", client_id="x")
    customer.customer_message_post(visitor_id="v1", conversation=None, text="y", client_id="y")
    with pytest.raises(customer.InvalidInput) as refused:
        customer.customer_message_post(visitor_id="v1", conversation=None, text="z", client_id="z")
    assert refused.value.code == "too_many_answers"
    assert Message.objects.count() == 2 and Conversation.objects.count() == 2

    Generation.objects.filter(pk=x.generation.pk).update(status=Generation.Status.RUNNING, started_at=timezone.now())
    generations.generation_complete(generation_id=x.generation.pk, text="done", reasoning="", measures={})
    customer.customer_message_post(visitor_id="v1", conversation=None, text="z", client_id="z")

    # A failed answer frees its place too.
    z = Generation.objects.get(prompt_message__client_id="z")
    generations.generation_fail(generation=z, error="engine: boom")
    customer.customer_message_post(visitor_id="v1", conversation=None, text="w", client_id="w")


def test_messages_to_an_agent_count_in_the_minute_but_start_no_answer(settings, answers_stay_open):
    settings.VISITOR_MAX_MESSAGES_PER_MINUTE = 2
    conversation = Conversation.objects.create(visitor_id="v2", status=Conversation.Status.WITH_AGENT)
    customer.customer_message_post(visitor_id="v2", conversation=conversation, text="a", client_id="a")
    customer.customer_message_post(visitor_id="v2", conversation=conversation, text="b", client_id="b")
    with pytest.raises(customer.InvalidInput) as refused:
        customer.customer_message_post(visitor_id="v2", conversation=conversation, text="c", client_id="c")
    assert refused.value.code == "rate_limited"
    assert Message.objects.count() == 2 and Generation.objects.count() == 0


def test_the_limits_switched_off_count_nothing(settings, answers_stay_open, redis_client):
    settings.VISITOR_LIMITS = False
    settings.VISITOR_MAX_MESSAGES_PER_MINUTE = 1
    for n in range(4):
        customer.customer_message_post(visitor_id="v3", conversation=None, text="hi", client_id=f"c{n}")
    assert Generation.objects.count() == 4
    assert list(redis_client.scan_iter("chatbot:limit:*")) == []


def test_with_redis_away_messages_go_through(settings, answers_stay_open):
    from chatbot.redis_client import get_redis

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    get_redis.cache_clear()
    try:
        for n in range(3):
            customer.customer_message_post(visitor_id="v4", conversation=None, text="hi", client_id=f"c{n}")
    finally:
        get_redis.cache_clear()
    assert Message.objects.count() == 3


# -- sockets open at once -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_visitor_s_sockets_past_the_limit_are_refused_and_a_closed_one_frees_its_place(settings):
    settings.VISITOR_MAX_SOCKETS = 2
    cookie, _ = await database_sync_to_async(make_session)()
    first, second = await connect(cookie), await connect(cookie)
    await assert_usable(second)
    third = await connect(cookie)
    refused = await third.receive_json_from(timeout=5)
    assert (refused["type"], refused["code"]) == ("error", "too_many_sockets")
    assert await third.receive_output(timeout=5) == {"type": "websocket.close", "code": 4429}
    await first.disconnect()
    fourth = await connect(cookie)
    await assert_usable(fourth)
    await assert_usable(second)
    # Other visitors are not held back.
    ([other], _) = await customer_sockets()
    await assert_usable(other)
    for communicator in (second, fourth, other):
        await communicator.disconnect()


# -- new chat sessions per address --------------------------------------------------------------------
def test_new_chat_sessions_per_address_and_hour(settings, client):
    from django.test import Client

    settings.ADDRESS_MAX_NEW_VISITORS_PER_HOUR = 2
    settings.SESSION_COOKIE_SECURE = False
    returning = Client(REMOTE_ADDR="203.0.113.7")
    assert returning.get("/").status_code == 200
    assert Client(REMOTE_ADDR="203.0.113.7").get("/").status_code == 200
    sessions = Session.objects.count()

    refused = Client(REMOTE_ADDR="203.0.113.7").get("/")
    assert refused.status_code == 429
    assert "Too many new chats" in refused.content.decode()
    assert settings.SESSION_COOKIE_NAME not in refused.cookies
    assert Session.objects.count() == sessions  # nothing stored

    assert returning.get("/").status_code == 200  # a visitor who has a session keeps it
    assert Client(REMOTE_ADDR="198.51.100.1").get("/").status_code == 200  # another address
    # X-Forwarded-For is read only from a trusted proxy.
    spoofed = Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert spoofed.get("/").status_code == 429
    settings.TRUSTED_PROXIES = ["203.0.113.0/24"]
    assert Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.99").get("/").status_code == 200


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("198.51.100.4", None, [], "198.51.100.4"),
        ("198.51.100.4", "192.0.2.1", [], "198.51.100.4"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "192.0.2.1", ["10.0.0.0/8"], "192.0.2.1"),
        # A client writes what it likes on the left; the nearest untrusted hop counts.
        ("10.0.0.2", "1.2.3.4, 192.0.2.1, 10.0.0.9", ["10.0.0.0/8"], "192.0.2.1"),
        ("10.0.0.2", "garbage", ["10.0.0.0/8"], "10.0.0.2"),
        ("2001:db8:1:2:3:4:5:6", None, [], "2001:db8:1:2::/64"),  # one machine often holds a /64
        ("::ffff:198.51.100.4", None, [], "198.51.100.4"),
        (None, None, [], "unknown"),
    ],
)
def test_the_client_address_behind_trusted_proxies(settings, peer, forwarded, trusted, expected):
    settings.TRUSTED_PROXIES = trusted
    assert limits.client_address(peer=peer, forwarded_for=forwarded) == expected


# -- nothing published to a channel nobody reads ------------------------------------------------------
def test_staff_hear_of_a_customer_message_only_where_a_desk_listens(answers_stay_open, redis_client):
    """The admit's round trip tells whether a desk socket follows the conversation and whether
    any desk is open: the staff events go only there (and both when it cannot tell)."""
    from chatbot.desk import presence

    redis_client.delete(presence.PRESENCE_KEY)
    post = customer.customer_message_post(visitor_id="quiet", conversation=None, text="hello", client_id="a")
    assert post.staff_events == []  # no desk open anywhere: nothing is published

    presence.presence_touch(user_id=1, channel_name="desk-socket")  # a desk is open, on its lists
    post = customer.customer_message_post(visitor_id="quiet", conversation=post.conversation, text="b", client_id="b")
    assert [group for group, _ in post.staff_events] == ["desk"]

    presence.conversation_watch(public_id=post.conversation.public_id)  # and follows this conversation
    post = customer.customer_message_post(visitor_id="quiet", conversation=post.conversation, text="c", client_id="c")
    assert [event["type"] for _, event in post.staff_events] == ["staff.message.new", "desk.conversation"]
    redis_client.delete(presence.PRESENCE_KEY, presence.staff_watch_key(post.conversation.public_id))


def test_without_the_limits_staff_events_always_go_out(settings, answers_stay_open, redis_client):
    from chatbot.desk import presence

    settings.VISITOR_LIMITS = False
    redis_client.delete(presence.PRESENCE_KEY)
    post = customer.customer_message_post(visitor_id="quiet2", conversation=None, text="hello", client_id="a")
    assert len(post.staff_events) == 2
