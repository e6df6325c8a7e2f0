"""The Channels layer: channels-redis's Redis pub/sub layer (settings.CHANNEL_LAYERS), kept
reading, and able to send many group messages in one round trip.

channels-redis's pub/sub reader reads from Redis only while its process subscribes to something:
with no subscription it sleeps 100 ms between checks. So in a web process that had no socket
open, the events to a socket that opened then waited up to 100 ms after they were published
(`bench/load.py` with one customer met it on the first answer of every conversation). Here, the first channel made in an event loop brings one more that nothing is
sent to, so the reader waits on Redis from then on. Only processes that hold sockets make
channels; the worker only publishes.
"""

from __future__ import annotations

from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer

KEEP_LISTENING_PREFIX = "keep-listening."


class PubSubChannelLayer(RedisPubSubChannelLayer):
    async def new_channel(self, prefix: str = "specific.") -> str:
        layer = self._get_layer()  # one per event loop
        if not getattr(layer, "kept_listening", False):
            await layer.new_channel(prefix=KEEP_LISTENING_PREFIX)
            layer.kept_listening = True
        return await layer.new_channel(prefix=prefix)

    async def group_send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """`group_send` for many (group, message) pairs, in order, as one pipeline of PUBLISHes
        per Redis shard through the layer's own connections and serializer (the worker's stream
        pump sends a pass this way, at a fraction of the worker's CPU per event).
        Reaches into channels-redis's internals (4.x, pinned in requirements.txt); raises
        AttributeError where they differ."""
        layer = self._get_layer()
        by_shard: dict[Any, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            channel = layer._get_group_channel_name(group)
            by_shard.setdefault(layer._get_shard(channel), []).append((channel, self.serialize(message)))
        for shard, items in by_shard.items():
            async with shard._lock:
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for channel, data in items:
                    pipe.publish(channel, data)
                await pipe.execute()
