"""The customer socket, through WebsocketCommunicator against the real ASGI app and the real
Redis channel layer (docs/protocol.md). No worker runs here: every message meets the
'assistant unavailable' path, and the integration tests cover the answered path."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from chatbot.asgi import application
from chatbot.conversations.models import Conversation, Generation, Message
from tests.conftest import make_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def connect(cookie: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def new_customer() -> tuple[WebsocketCommunicator, str]:
    cookie, visitor_id = await database_sync_to_async(make_session)()
    return await connect(cookie), visitor_id


async def send_message(communicator: WebsocketCommunicator, text: str, client_id: str = "c1") -> dict:
    await communicator.send_json_to({"type": "message.send", "text": text, "client_id": client_id})
    return await communicator.receive_json_from(timeout=5)


async def receive_handoff(communicator: WebsocketCommunicator) -> dict:
    """The frames of a conversation handed to a person (no worker runs in these tests, so every
    answer fails for good and the conversation goes to the queue): its new state, then its place."""
    updated = await communicator.receive_json_from(timeout=5)
    assert updated["type"] == "conversation.updated" and updated["conversation"]["status"] == "waiting_for_agent"
    queue = await communicator.receive_json_from(timeout=5)
    assert queue["type"] == "queue.updated" and queue["position"] >= 1
    return queue


@database_sync_to_async
def counts() -> tuple[int, int, int]:
    return Conversation.objects.count(), Message.objects.count(), Generation.objects.count()


async def test_socket_without_a_chat_session_is_closed_with_4401():
    communicator = await connect(cookie=None)
    output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": 4401}


async def test_hello_without_a_conversation_returns_empty_history():
    communicator, _ = await new_customer()
    await communicator.send_json_to({"type": "hello", "conversation_id": None})
    assert await communicator.receive_json_from() == {
        "type": "history",
        "conversation": None,
        "messages": [],
        "generation": None,
        "queue": None,
        "rating": None,
    }
    await communicator.disconnect()


async def test_message_is_saved_before_anything_else_and_unavailable_is_said_when_no_worker_runs():
    communicator, visitor_id = await new_customer()
    saved = await send_message(communicator, "  Where is my order?  ")
    assert saved["type"] == "message.saved"
    assert saved["client_id"] == "c1"
    assert saved["message"]["text"] == "Where is my order?"
    assert saved["message"]["author"] == "customer"
    unavailable = await communicator.receive_json_from()
    assert unavailable["type"] == "error"
    assert unavailable["code"] == "assistant_unavailable"
    assert "saved" in unavailable["detail"]

    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=saved["conversation"]["id"])
    assert conversation.visitor_id == visitor_id
    generation = await database_sync_to_async(Generation.objects.get)(conversation=conversation)
    assert generation.status == Generation.Status.FAILED
    assert "no live worker" in generation.error
    assert await counts() == (1, 1, 1)
    await communicator.disconnect()


async def test_resent_client_id_is_not_stored_twice():
    communicator, _ = await new_customer()
    first = await send_message(communicator, "hello", client_id="same")
    await communicator.receive_json_from()  # unavailable
    again = await send_message(communicator, "hello", client_id="same")
    assert again["message"]["id"] == first["message"]["id"]
    assert (await counts())[1] == 1
    await communicator.disconnect()


async def test_history_is_reloaded_after_reconnect_and_never_carries_reasoning():
    communicator, _ = await new_customer()
    cookie = dict(communicator.scope["headers"])[b"cookie"].decode()
    saved = await send_message(communicator, "Do you ship abroad?")
    await communicator.receive_json_from()
    conversation_id = saved["conversation"]["id"]

    @database_sync_to_async
    def add_bot_answer() -> None:
        conversation = Conversation.objects.get(public_id=conversation_id)
        Message.objects.create(
            conversation=conversation, author=Message.Author.BOT, text="Yes, to 30 countries.", reasoning="SECRET"
        )

    await add_bot_answer()
    await communicator.disconnect()

    again = await connect(cookie)
    await again.send_json_to({"type": "hello", "conversation_id": conversation_id})
    history = await again.receive_json_from()
    assert history["conversation"]["id"] == conversation_id
    assert [(m["author"], m["text"]) for m in history["messages"]] == [
        ("customer", "Do you ship abroad?"),
        ("bot", "Yes, to 30 countries."),
    ]
    assert "SECRET" not in json.dumps(history)
    # hello with no id attaches the visitor's latest conversation (a page reload).
    await again.send_json_to({"type": "hello", "conversation_id": None})
    assert (await again.receive_json_from())["conversation"]["id"] == conversation_id
    await again.disconnect()


async def test_another_visitors_conversation_is_not_found_and_reveals_nothing():
    owner, _ = await new_customer()
    saved = await send_message(owner, "my private order 12345")
    await owner.receive_json_from()
    stranger, _ = await new_customer()
    await stranger.send_json_to({"type": "hello", "conversation_id": saved["conversation"]["id"]})
    refused = await stranger.receive_json_from()
    assert refused["type"] == "error" and refused["code"] == "conversation_not_found"
    assert "12345" not in json.dumps(refused)
    await stranger.send_json_to({"type": "hello", "conversation_id": "does-not-exist"})
    assert (await stranger.receive_json_from())["code"] == "conversation_not_found"
    # The stranger's next message starts a conversation of their own.
    mine = await send_message(stranger, "hi", client_id="s1")
    assert mine["conversation"]["id"] != saved["conversation"]["id"]
    await owner.disconnect()
    await stranger.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "malformed"),
        ("[1, 2, 3]", "malformed"),
        ('{"text": "no type"}', "malformed"),
        ('{"type": "launch.missiles"}', "unknown_type"),
        ('{"type": "message.send", "text": "", "client_id": "a"}', "empty_message"),
        ('{"type": "message.send", "text": "   \\n ", "client_id": "a"}', "empty_message"),
        ('{"type": "message.send", "text": 42, "client_id": "a"}', "empty_message"),
        ('{"type": "message.send", "text": "hi", "client_id": "<script>"}', "invalid_client_id"),
        ('{"type": "message.send", "text": "hi"}', "invalid_client_id"),
        ('{"type": "hello", "conversation_id": 7}', "malformed"),
        ('{"type": "message.send", "text": "hi \\ud800 there", "client_id": "a"}', "malformed"),  # not text
        ('{"type": "message.send", "text": "hi", "client_id": "a", "x": "\\udfff"}', "malformed"),
    ],
)
async def test_bad_frames_get_an_error_and_store_nothing(frame: str, code: str):
    communicator, _ = await new_customer()
    await communicator.send_to(text_data=frame)
    error = await communicator.receive_json_from()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["detail"]
    assert await counts() == (0, 0, 0)
    await communicator.disconnect()


async def test_message_over_the_limit_is_refused_with_the_limit_in_words():
    communicator, _ = await new_customer()
    error = await send_message(communicator, "x" * (settings.MESSAGE_MAX_CHARS + 1))
    assert error["code"] == "message_too_long"
    assert str(settings.MESSAGE_MAX_CHARS) in error["detail"]
    assert error["client_id"] == "c1"
    assert await counts() == (0, 0, 0)
    await communicator.disconnect()


async def test_oversized_frame_closes_with_1009_and_stores_nothing():
    communicator, _ = await new_customer()
    await communicator.send_to(
        text_data=json.dumps({"type": "message.send", "text": "y" * settings.WS_MAX_FRAME_BYTES, "client_id": "a"})
    )
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}
    assert await counts() == (0, 0, 0)


async def test_a_frame_over_the_limit_in_utf8_bytes_closes_with_1009_though_its_characters_are_fewer():
    """An emoji is one character and four bytes: the limit counts what travelled."""
    communicator, _ = await new_customer()
    text = "\U0001f600" * (settings.WS_MAX_FRAME_BYTES // 4 + 64)
    frame = json.dumps({"type": "message.send", "text": text, "client_id": "a"}, ensure_ascii=False)
    assert len(frame) < settings.WS_MAX_FRAME_BYTES < len(frame.encode())
    await communicator.send_to(text_data=frame)
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 1009}
    assert await counts() == (0, 0, 0)


async def test_a_frame_of_multibyte_text_within_the_byte_limit_passes():
    communicator, _ = await new_customer()
    frame = json.dumps({"type": "ping", "pad": "\u00e9" * (settings.WS_MAX_FRAME_BYTES // 2 - 40)}, ensure_ascii=False)
    assert len(frame) * 4 > settings.WS_MAX_FRAME_BYTES >= len(frame.encode())
    await communicator.send_to(text_data=frame)
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()


async def test_ping_pong_and_new_conversation():
    communicator, _ = await new_customer()
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await send_message(communicator, "first")
    await communicator.receive_json_from()
    await communicator.send_json_to({"type": "conversation.new"})
    assert (await communicator.receive_json_from())["conversation"] is None
    second = await send_message(communicator, "second", client_id="c2")
    assert (await counts())[0] == 2
    assert second["message"]["text"] == "second"
    await communicator.disconnect()


async def test_resolved_conversation_refuses_new_messages():
    communicator, _ = await new_customer()
    saved = await send_message(communicator, "thanks, bye")
    await communicator.receive_json_from()  # unavailable: no worker here
    await receive_handoff(communicator)  # so the handoff can't land after the resolve below
    await database_sync_to_async(Conversation.objects.filter(public_id=saved["conversation"]["id"]).update)(
        status=Conversation.Status.RESOLVED
    )
    refused = await send_message(communicator, "one more thing", client_id="c2")
    assert refused["code"] == "conversation_closed"
    assert (await counts())[1] == 1
    await communicator.disconnect()


async def test_rate_limit():
    communicator, _ = await new_customer()
    codes = []
    for _ in range(settings.WS_MAX_MESSAGES_PER_MINUTE + 1):
        await communicator.send_json_to({"type": "ping"})
        codes.append((await communicator.receive_json_from()).get("code"))
    assert codes[-1] == "rate_limited"
    assert codes[:-1] == [None] * settings.WS_MAX_MESSAGES_PER_MINUTE
    await communicator.disconnect()


async def test_an_idle_socket_stays_open_past_the_layers_blocking_wait():
    """channels-redis waits 5 s for a socket's next event; with redis-py's default 5 s read
    timeout an idle consumer died. It must still answer after longer silence."""
    import asyncio

    communicator, _ = await new_customer()
    await communicator.send_json_to({"type": "hello", "conversation_id": None})
    await communicator.receive_json_from()
    await asyncio.sleep(6.5)
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


async def test_the_customer_sees_live_when_an_agent_joins(django_user_model):
    from chatbot.conversations.services.desk import conversation_claim

    communicator, _ = await new_customer()
    saved = await send_message(communicator, "I want a person")
    await communicator.receive_json_from()  # unavailable: no worker here
    await receive_handoff(communicator)

    @database_sync_to_async
    def take_over() -> None:
        agent = django_user_model.objects.create_user("kim", first_name="Kim", is_staff=True)
        conversation = Conversation.objects.get(public_id=saved["conversation"]["id"])
        conversation_claim(conversation=conversation, agent=agent)

    await take_over()
    event = await communicator.receive_json_from(timeout=5)
    assert event["type"] == "message.new"
    assert event["message"]["author"] == "system"
    assert event["message"]["text"] == "Kim from our support team joined the conversation."
    await communicator.disconnect()


async def test_a_first_message_hears_its_answer_even_from_a_worker_that_answers_at_once(monkeypatch):
    """The first message starts a conversation, and its generation is enqueued when the message
    commits. A worker may publish from that moment on, so the socket must already be in the new
    conversation's group (it once joined only after the post returned, and an answer that came
    quickly enough never reached the page)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from chatbot.conversations.services import customer
    from chatbot.events import CLIENT_EVENT

    real_enqueue = customer.generation_enqueue

    def enqueue_and_publish_at_once(*, generation, **kwargs):
        # What the quickest worker would do: publish the moment the task could be taken.
        async_to_sync(get_channel_layer().group_send)(
            generation.conversation.group_name,
            {
                "type": CLIENT_EVENT,
                "event": {"type": "generation.started", "generation_id": generation.pk, "model_variant": "x"},
            },
        )
        return real_enqueue(generation=generation, **kwargs)

    monkeypatch.setattr(customer, "generation_enqueue", enqueue_and_publish_at_once)
    communicator, _ = await new_customer()
    await communicator.send_json_to({"type": "message.send", "text": "hi", "client_id": "c1"})
    frames = [await communicator.receive_json_from(timeout=5) for _ in range(3)]
    assert {frame["type"] for frame in frames} == {"message.saved", "generation.started", "error"}
    started = next(frame for frame in frames if frame["type"] == "generation.started")
    generation = await database_sync_to_async(Generation.objects.select_related("conversation").get)()
    assert started["generation_id"] == generation.pk
    saved = next(frame for frame in frames if frame["type"] == "message.saved")
    assert saved["conversation"]["id"] == generation.conversation.public_id
    await communicator.disconnect()


async def test_a_refused_first_message_leaves_no_group_behind():
    """The socket joins the would-be conversation's group before posting; a refused post leaves it."""
    communicator, _ = await new_customer()
    before = conversation_groups()
    await communicator.send_json_to({"type": "message.send", "text": "   ", "client_id": "c1"})
    refused = await communicator.receive_json_from(timeout=5)
    assert refused["type"] == "error"
    assert await counts() == (0, 0, 0)
    assert conversation_groups() == before
    await communicator.disconnect()


def conversation_groups() -> set[bytes]:
    """The conversation groups some process listens to: with the pub/sub layer a group is a Redis
    channel, subscribed while it has a member in that process."""
    from channels.layers import get_channel_layer

    from chatbot.redis_client import get_redis

    prefix = get_channel_layer().prefix
    return set(get_redis().pubsub_channels(f"{prefix}__group__conv.*"))


async def test_streamed_events_reach_the_socket_without_a_hop_to_the_sync_thread(monkeypatch):
    """Channels closes old database connections before each handler through a hop to its sync
    thread (`aclose_old_connections`). The consumer skips that: its database calls go through
    database_sync_to_async, which closes them itself in its own thread. So the twenty or so
    events a second of each streamed answer cost no thread hop."""
    import channels.consumer
    from channels.layers import get_channel_layer

    from chatbot.events import CLIENT_EVENT

    communicator, _ = await new_customer()
    await send_message(communicator, "hi")  # message.saved
    assert (await communicator.receive_json_from(timeout=5))["code"] == "assistant_unavailable"
    await receive_handoff(communicator)
    conversation = await database_sync_to_async(Conversation.objects.get)()
    hops = []
    real = channels.consumer.aclose_old_connections

    async def counted():
        hops.append(1)
        return await real()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    for index in range(5):
        await get_channel_layer().group_send(
            conversation.group_name, {"type": CLIENT_EVENT, "event": {"type": "answer.delta", "text": str(index)}}
        )
    assert [(await communicator.receive_json_from(timeout=5))["text"] for _ in range(5)] == ["0", "1", "2", "3", "4"]
    assert (await send_message(communicator, "again", client_id="c2"))["type"] == "message.saved"
    assert hops == []
    assert (await counts())[1] == 2
    await communicator.disconnect()


async def test_the_layer_keeps_reading_from_redis_with_no_socket_open():
    """channels-redis's pub/sub reader polls every 100 ms while its process subscribes to nothing
    (the first events to the next socket waited that long); the layer keeps one idle channel
    subscribed per event loop, so after the last socket closes the process still subscribes."""
    from channels.layers import get_channel_layer

    from chatbot.channel_layer import KEEP_LISTENING_PREFIX
    from chatbot.redis_client import get_redis

    pattern = f"{get_channel_layer().prefix}{KEEP_LISTENING_PREFIX}*"
    communicator, _ = await new_customer()
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()
    layer = get_channel_layer()._get_layer()
    assert not [name for name in layer.channels if KEEP_LISTENING_PREFIX not in name]  # the socket's channel is gone
    assert len(get_redis().pubsub_channels(pattern)) >= 1
    assert all(shard._pubsub.subscribed for shard in layer._shards)  # what the reader checks before it sleeps
