"""The worker's event publisher over the real Redis channel layer: events reach a group's
channel in the order they were published, one at a time or handed over in a batch."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from chatbot.events import CLIENT_EVENT
from inference_worker.publisher import EventPublisher


@pytest.mark.asyncio
async def test_events_arrive_in_order_one_by_one_and_in_batches():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("conv.publisher-test", channel)
    await layer.group_add("staff.publisher-test", channel)
    publisher = EventPublisher()
    try:

        def publish_all() -> None:
            publisher.publish("conv.publisher-test", {"n": 0})
            with publisher.batch():
                for n in range(1, 40):
                    group = "staff.publisher-test" if n % 5 == 0 else "conv.publisher-test"
                    assert publisher.publish(group, {"n": n}) is None  # leaves with the batch
            publisher.publish("conv.publisher-test", {"n": 40})

        await asyncio.to_thread(publish_all)
        received = []
        for _ in range(41):
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
            assert message["type"] == CLIENT_EVENT
            received.append(message["event"]["n"])
    finally:
        publisher.close()
        await layer.group_discard("conv.publisher-test", channel)
        await layer.group_discard("staff.publisher-test", channel)
    conv = [n for n in received if n % 5 or n in (0, 40)]
    assert conv == sorted(conv)  # each group's events in the order they were published
    assert sorted(received) == list(range(41))  # none lost


@pytest.mark.asyncio
async def test_a_batch_leaves_as_one_pipeline_in_order_after_what_came_before(monkeypatch):
    """With the pub/sub layer a batch is one pipeline of PUBLISHes (not one group_send per event),
    and it still leaves after the group's earlier events and before its later ones."""
    from chatbot.channel_layer import PubSubChannelLayer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("conv.pipeline-test", channel)
    pipelines, single_sends = [], []
    real_many = PubSubChannelLayer.group_send_many

    async def counted_many(self, messages):
        pipelines.append(len(messages))
        # The first batch's round trip is slow: the second must still wait for it.
        await asyncio.sleep(0.1 if len(pipelines) == 1 else 0)
        return await real_many(self, messages)

    monkeypatch.setattr(PubSubChannelLayer, "group_send_many", counted_many)
    publisher = EventPublisher()
    real_send = publisher._send

    async def counted_send(group, event, previous, done):
        single_sends.append(event["n"])
        return await real_send(group, event, previous, done)

    publisher._send = counted_send
    try:

        def publish_all() -> None:
            publisher.publish("conv.pipeline-test", {"n": 0})
            for start in (1, 11):
                with publisher.batch():
                    for n in range(start, start + 10):
                        publisher.publish("conv.pipeline-test", {"n": n})
            publisher.publish("conv.pipeline-test", {"n": 21})

        await asyncio.to_thread(publish_all)
        received = [(await asyncio.wait_for(layer.receive(channel), timeout=5))["event"]["n"] for _ in range(22)]
    finally:
        publisher.close()
        await layer.group_discard("conv.pipeline-test", channel)
    assert received == list(range(22))
    assert pipelines == [10, 10]
    assert single_sends == [0, 21]


@pytest.mark.asyncio
async def test_a_batch_still_arrives_if_the_layers_internals_changed(monkeypatch):
    """The pipeline reaches into channels-redis's internals; if they are not what it expects, the
    batch goes out one group_send per event, and so do the next ones."""
    from chatbot.channel_layer import PubSubChannelLayer

    async def internals_changed(self, messages):
        raise AttributeError("'RedisSingleShardConnection' object has no attribute '_redis'")

    monkeypatch.setattr(PubSubChannelLayer, "group_send_many", internals_changed)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("conv.fallback-test", channel)
    publisher = EventPublisher()
    try:

        def publish_all() -> None:
            for start in (0, 5):
                with publisher.batch():
                    for n in range(start, start + 5):
                        publisher.publish("conv.fallback-test", {"n": n})

        await asyncio.to_thread(publish_all)
        received = [(await asyncio.wait_for(layer.receive(channel), timeout=5))["event"]["n"] for _ in range(10)]
        assert publisher._send_many is None
    finally:
        publisher.close()
        await layer.group_discard("conv.fallback-test", channel)
    assert received == list(range(10))
