"""Nothing is published to a channel nobody reads: a bot answer's reasoning goes to the staff
group (`staff.conv.<id>`) only while a desk socket follows the conversation, which the worker
learns from a Redis key the desk socket keeps set (read with the cancellation flags, one MGET)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations import protocol
from chatbot.desk.presence import staff_watch_key
from chatbot.redis_client import get_redis
from inference_worker.cancellations import CancelWatcher
from inference_worker.streaming import AnswerStream
from tests.inference_worker.test_cancellations import CountingRedis, Request


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def publish(self, group: str, event: dict) -> None:
        self.sent.append((group, event["type"]))


def stream(publisher: Publisher) -> AnswerStream:
    return AnswerStream(
        publisher=publisher,
        group=protocol.conversation_group("c1"),
        staff_group=protocol.conversation_staff_group("c1"),
        generation_id=1,
        attempt=1,
        interval_s=0,
    )


def test_the_reasoning_goes_to_the_staff_group_only_while_staff_follow_the_conversation():
    publisher = Publisher()
    answer = stream(publisher)
    answer.set_staff_watching(False)
    answer.add("let me think", "")
    answer.maybe_flush(force=True)
    answer.add("more thinking", "Hello")
    answer.maybe_flush(force=True)
    assert publisher.sent == [("conv.c1", "answer.thinking"), ("conv.c1", "answer.delta")]

    publisher.sent.clear()
    answer.set_staff_watching(True)
    answer.add("still thinking", "")
    answer.maybe_flush(force=True)
    assert publisher.sent == [("staff.conv.c1", "reasoning.delta")]


def test_the_watcher_reads_whether_staff_follow_with_the_cancellation_flags_in_one_mget():
    redis = CountingRedis()
    watcher = CancelWatcher(interval_s=3600, redis_client=lambda: redis)  # polled by hand here
    key = staff_watch_key("watch-test")
    get_redis().delete(key)
    seen: list[bool] = []
    request = Request()
    try:
        watcher.watch(910_001, request, staff_key=key, on_staff=seen.append)
        watcher.watch(910_002, Request())  # a suggestion: no staff key
        watcher.poll()
        get_redis().set(key, "1", ex=30)
        watcher.poll()
        assert seen == [False, True]
        assert redis.commands == ["MGET", "MGET"]
        watcher.unwatch(910_001, request)
        watcher.poll()
        assert seen == [False, True]  # no longer asked once unwatched
    finally:
        watcher.stop()
        get_redis().delete(key)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_desk_socket_following_a_conversation_keeps_its_key_set_and_its_pings_refresh_it():
    from chatbot.conversations.models import Conversation
    from tests.desk.test_desk_consumer import agent, receive_type

    conversation = await database_sync_to_async(Conversation.objects.create)(visitor_id="v-watch")
    key = staff_watch_key(conversation.public_id)
    assert get_redis().get(key) is None
    kim = await agent("kim")
    await kim.send_json_to({"type": "conversation.open", "conversation_id": conversation.public_id})
    await receive_type(kim, "conversation.detail")
    assert get_redis().get(key) == "1"
    get_redis().expire(key, 2)
    await kim.send_json_to({"type": "ping"})
    await receive_type(kim, "pong")
    assert get_redis().ttl(key) > 2
    await kim.disconnect()
