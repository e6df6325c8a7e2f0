"""The Channels layer: channels-redis's Redis pub/sub layer (settings.CHANNEL_LAYERS), kept reading.

channels-redis's pub/sub reader reads from Redis only while its process subscribes to something:
with no subscription it sleeps 100 ms between checks. So in a web process that had no socket
open, the events to a socket that opened then waited up to 100 ms after they were published
(45-80 ms measured: `bench/load.py` with one customer met it on the first answer of every
conversation). Here, the first channel made in an event loop brings one more that nothing is
sent to, so the reader waits on Redis from then on. Only processes that hold sockets make
channels; the worker only publishes.
"""

from __future__ import annotations

from channels_redis.pubsub import RedisPubSubChannelLayer

KEEP_LISTENING_PREFIX = "keep-listening."


class PubSubChannelLayer(RedisPubSubChannelLayer):
    async def new_channel(self, prefix: str = "specific.") -> str:
        layer = self._get_layer()  # one per event loop
        if not getattr(layer, "kept_listening", False):
            await layer.new_channel(prefix=KEEP_LISTENING_PREFIX)
            layer.kept_listening = True
        return await layer.new_channel(prefix=prefix)
