"""The desk socket through `WebsocketCommunicator` on the real Redis layer, with a customer's
socket and agents' sockets in the same test."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client

from chatbot.asgi import application
from chatbot.conversations.models import Conversation, Generation, Message, Note
from chatbot.desk.presence import PRESENCE_KEY
from chatbot.queues import generation_queue
from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_key
from tests.conversations.test_consumers import new_customer, send_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def served(redis_client):
    """A live worker's heartbeat: answers are handed to the broker as in production (no worker
    runs here; the queued tasks are dropped after the test)."""
    status = WorkerStatus(
        name="desk-socket-test",
        variants={v: {"state": "ready"} for v in ("gptq-int4", "fp16")},
        running=0,
        waiting=0,
        reported_at=time.time(),
    )
    redis_client.set(heartbeat_key(status.name), status.encode(), ex=120)
    yield
    heartbeat_delete(status.name)
    redis_client.delete(PRESENCE_KEY, *(generation_queue(v) for v in ("gptq-int4", "fp16")))


@database_sync_to_async
def staff_cookie(username: str, *, permitted: bool = True, staff: bool = True) -> str:
    user = User.objects.create_user(username, first_name=username.title(), is_staff=staff)
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="handle_conversations"))
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def desk_socket(cookie: str | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, "/ws/desk/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def agent(username: str) -> WebsocketCommunicator:
    communicator = await desk_socket(await staff_cookie(username))
    await communicator.send_json_to({"type": "hello"})
    snapshot = await receive_type(communicator, "desk.snapshot")
    assert snapshot["me"]["name"] == username.title()
    return communicator


async def receive_type(communicator: WebsocketCommunicator, frame_type: str, *, timeout: float = 5) -> dict:
    """The next frame of this type (others that come first, such as presence updates, pass)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await communicator.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        if frame["type"] == frame_type:
            return frame


async def receive_where(communicator, predicate, *, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        frame = await communicator.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        if predicate(frame):
            return frame


async def test_a_logged_out_or_unpermitted_socket_is_closed_with_its_code():
    anonymous = await desk_socket(None)
    assert await anonymous.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    customer_only = await desk_socket(await staff_cookie("pat", permitted=False))
    assert await customer_only.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
    not_staff = await desk_socket(await staff_cookie("sam", permitted=True, staff=False))
    assert await not_staff.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}


async def test_handoff_take_over_reply_typing_notes_hand_back_and_resolve_live():
    kim = await agent("kim")
    customer, _ = await new_customer()
    saved = await send_message(customer, "Where is my order?")
    conversation_id = saved["conversation"]["id"]
    assert (await receive_type(kim, "desk.conversation"))["conversation"]["status"] == "bot"

    # "Talk to a person": the customer waits, with an agent online; the desk sees it live.
    await customer.send_json_to({"type": "handoff.request"})
    updated = await receive_type(customer, "conversation.updated")
    assert updated["conversation"]["status"] == "waiting_for_agent"
    queue = await receive_type(customer, "queue.updated")
    assert (queue["position"], queue["agents_online"]) == (1, 1)
    waiting = await receive_where(
        kim, lambda f: f["type"] == "desk.conversation" and f["conversation"]["status"] == "waiting_for_agent"
    )
    assert waiting["conversation"]["handoff_reason"] == "customer_request"
    generation = await database_sync_to_async(Generation.objects.get)()
    assert generation.status == Generation.Status.CANCELLED  # the bot's answer in progress stopped

    # Take over: the customer hears who joined.
    await kim.send_json_to({"type": "conversation.open", "conversation_id": conversation_id})
    detail = await receive_type(kim, "conversation.detail")
    assert [m["text"] for m in detail["messages"]] == ["Where is my order?"]
    await kim.send_json_to({"type": "conversation.claim", "conversation_id": conversation_id})
    joined = await receive_type(customer, "message.new")
    assert joined["message"]["text"] == "Kim from our support team joined the conversation."
    with_agent = await receive_type(customer, "conversation.updated")
    assert with_agent["conversation"]["agent"] == {"name": "Kim"}

    # The agent types and replies; the customer sees both live.
    await kim.send_json_to({"type": "typing", "conversation_id": conversation_id, "active": True})
    typing = await receive_type(customer, "typing")
    assert (typing["author"], typing["name"], typing["active"]) == ("agent", "Kim", True)
    await kim.send_json_to(
        {"type": "message.send", "conversation_id": conversation_id, "text": "<b>Hi</b>, I'm Kim.", "client_id": "k1"}
    )
    assert (await receive_type(kim, "message.saved"))["message"]["author"] == "agent"
    reply = await receive_type(customer, "message.new")
    assert (reply["message"]["author"], reply["message"]["text"]) == ("agent", "<b>Hi</b>, I'm Kim.")

    # The customer types and writes: the desk sees both, and the bot stays silent.
    await customer.send_json_to({"type": "typing", "active": True})
    typing = await receive_where(kim, lambda f: f["type"] == "typing" and f["author"] == "customer")
    assert typing["active"] is True and typing["conversation_id"] == conversation_id
    await customer.send_json_to({"type": "message.send", "text": "It's order 1234", "client_id": "c2"})
    assert (await receive_type(customer, "message.saved"))["message"]["text"] == "It's order 1234"
    staff_copy = await receive_type(kim, "staff.message.new")
    assert staff_copy["message"]["text"] == "It's order 1234"
    assert await database_sync_to_async(Generation.objects.count)() == 1  # no new bot generation

    # A private note reaches staff only.
    await kim.send_json_to({"type": "note.add", "conversation_id": conversation_id, "text": "VIP customer"})
    assert (await receive_type(kim, "note.new"))["note"]["text"] == "VIP customer"
    assert await customer.receive_nothing(timeout=0.5)  # the customer hears nothing of it

    # Hand back: the bot answers the next message; then resolve needs the conversation again.
    await kim.send_json_to({"type": "conversation.handback", "conversation_id": conversation_id})
    assert (await receive_type(customer, "conversation.updated"))["conversation"]["status"] == "bot"
    await customer.send_json_to({"type": "message.send", "text": "one more thing", "client_id": "c3"})
    await receive_type(customer, "message.saved")
    assert await database_sync_to_async(Generation.objects.filter(status=Generation.Status.PENDING).count)() == 1
    await kim.send_json_to({"type": "conversation.resolve", "conversation_id": conversation_id})
    refused = await receive_type(kim, "error")
    assert refused["code"] == "not_claimed"
    await kim.send_json_to({"type": "conversation.claim", "conversation_id": conversation_id})
    await kim.send_json_to({"type": "conversation.resolve", "conversation_id": conversation_id})
    resolved = await receive_where(
        customer, lambda f: f["type"] == "conversation.updated" and f["conversation"]["status"] == "resolved"
    )
    assert resolved["conversation"]["id"] == conversation_id
    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=conversation_id)
    assert conversation.resolved_by == "agent" and conversation.first_agent_reply_at is not None
    assert await database_sync_to_async(Note.objects.count)() == 1
    for communicator in (kim, customer):
        await communicator.disconnect()


async def test_two_agents_claiming_the_same_conversation_one_wins_the_other_is_told():
    kim, lee = await agent("kim"), await agent("lee")
    customer, _ = await new_customer()
    await customer.send_json_to({"type": "handoff.request"})
    conversation_id = (await receive_type(customer, "conversation.updated"))["conversation"]["id"]
    for socket in (kim, lee):
        await socket.send_json_to({"type": "conversation.claim", "conversation_id": conversation_id})

    async def outcome(socket) -> tuple[str, dict | None]:
        """Who the desk says took it, and this socket's refusal (in whatever order they come)."""
        owner, refusal = None, None
        while owner is None or (refusal is None and owner != socket_name[socket]):
            frame = await socket.receive_json_from(timeout=5)
            if frame["type"] == "desk.conversation" and frame["conversation"]["status"] == "with_agent":
                owner = frame["conversation"]["agent"]["name"]
            elif frame["type"] == "error":
                refusal = frame
        return owner, refusal

    socket_name = {kim: "Kim", lee: "Lee"}
    (kim_sees, kim_refused), (lee_sees, lee_refused) = await outcome(kim), await outcome(lee)
    assert kim_sees == lee_sees
    winner = kim_sees
    refused = lee_refused if winner == "Kim" else kim_refused
    assert (kim_refused if winner == "Kim" else lee_refused) is None
    assert (refused["code"], refused["detail"]) == ("already_claimed", f"{winner} took this conversation over already.")
    assert await database_sync_to_async(Message.objects.filter(author=Message.Author.SYSTEM).count)() == 1
    for socket in (kim, lee, customer):
        await socket.disconnect()


async def test_bad_desk_frames_are_refused_and_store_nothing():
    kim = await agent("kim")
    lee = await agent("lee")
    customer, _ = await new_customer()
    await customer.send_json_to({"type": "handoff.request"})
    conversation_id = (await receive_type(customer, "conversation.updated"))["conversation"]["id"]
    cases = [
        ({"type": "message.send", "conversation_id": conversation_id, "text": "hi", "client_id": "k1"}, "not_claimed"),
        ({"type": "conversation.handback", "conversation_id": conversation_id}, "not_claimed"),
        (
            {"type": "message.send", "conversation_id": "nope", "text": "hi", "client_id": "k1"},
            "conversation_not_found",
        ),
        ({"type": "conversation.claim", "conversation_id": 7}, "conversation_not_found"),
        ({"type": "note.add", "conversation_id": conversation_id, "text": "x" * 2001}, "message_too_long"),
        ({"type": "presence.set", "presence": "sleeping"}, "malformed"),
        ({"type": "note.add", "conversation_id": conversation_id, "text": "half a pair \ud800"}, "malformed"),
        ({"type": "launch"}, "unknown_type"),
    ]
    for frame, code in cases:
        await kim.send_json_to(frame)
        assert (await receive_type(kim, "error"))["code"] == code, frame
    await lee.send_json_to({"type": "conversation.claim", "conversation_id": conversation_id})
    await receive_where(lee, lambda f: f["type"] == "desk.conversation" and f["conversation"]["status"] == "with_agent")
    await kim.send_json_to(
        {"type": "message.send", "conversation_id": conversation_id, "text": "hi", "client_id": "k2"}
    )
    refused = await receive_type(kim, "error")
    assert (refused["code"], refused["detail"]) == ("not_yours", "Lee handles this conversation, not you.")
    counts = await database_sync_to_async(
        lambda: (Message.objects.filter(author=Message.Author.AGENT).count(), Note.objects.count())
    )()
    assert counts == (0, 0)
    await kim.send_input({"type": "websocket.receive", "text": "x" * (settings.WS_MAX_FRAME_BYTES + 1)})
    assert await kim.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}
    for socket in (lee, customer):
        await socket.disconnect()
