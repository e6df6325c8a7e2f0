"""Events from the worker to sockets, over one long-lived event loop and its Redis pool.

`async_to_sync(group_send)` from a worker thread runs a fresh event loop and opens a fresh Redis
connection each call, which capped how many events the whole path could carry. Here one
daemon thread runs one loop for the whole process; task threads hand it events without waiting.
Events of one group are sent in order: each waits for the one before it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from channels.layers import get_channel_layer

from chatbot.events import CLIENT_EVENT

logger = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="event-publisher", daemon=True)
        self._layer = get_channel_layer()
        # `chatbot.channel_layer.PubSubChannelLayer.group_send_many` where the layer has it.
        self._send_many = getattr(self._layer, "group_send_many", None)
        self._tails: dict[str, asyncio.Future] = {}
        self._local = threading.local()
        self._thread.start()

    def publish(self, group: str, event: dict[str, Any]) -> Future | None:
        """Queue an event for a group's sockets; returns a future the caller may wait on (None
        inside `batch()`, where the event leaves with the batch)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is not None:
            buffer.append((group, event))
            return None
        return asyncio.run_coroutine_threadsafe(self._send_in_order(group, event), self._loop)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Events published inside (on this thread) are handed to the loop together at the end:
        one wake-up of the loop's thread instead of one per event, with each group's order kept.
        The stream pump publishes each pass over its requests as one batch."""
        self._local.buffer = []
        try:
            yield
        finally:
            events, self._local.buffer = self._local.buffer, None
            if events:
                asyncio.run_coroutine_threadsafe(self._send_all(events), self._loop)

    async def _send_all(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        # Every event takes its place in its group's chain now, before this coroutine first
        # awaits, so that an event published after the batch is sent after it.
        claimed = [(group, event, *self._claim(group)) for group, event in events]
        send_many = self._send_many
        if send_many is None:  # another channel layer: one group_send per event
            await asyncio.gather(*(self._send(*args) for args in claimed))
            return
        # The pub/sub layer: the whole batch as one pipeline of PUBLISHes per Redis shard, in
        # order (one round trip and one lock instead of one each per event, whose per-command
        # asyncio path was most of the worker's CPU per event), once the events published
        # before the batch to the same groups have left.
        own = {id(done) for *_, done in claimed}
        try:
            for *_, previous, _ in claimed:
                if previous is not None and id(previous) not in own:
                    await previous
            messages = [(group, {"type": CLIENT_EVENT, "event": event}) for group, event, *_ in claimed]
            try:
                await send_many(messages)
            except AttributeError:
                # channels-redis's internals changed under us: one group_send per event from now on.
                logger.warning("pipelined publishing unavailable; publishing one event at a time", exc_info=True)
                self._send_many = None
                for group, message in messages:
                    await self._layer.group_send(group, message)
        except Exception:  # noqa: BLE001 - at-most-once, as in _send
            logger.warning("could not publish a batch of %d events", len(claimed), exc_info=True)
        finally:
            for group, _, _, done in claimed:
                done.set_result(None)
                if self._tails.get(group) is done:
                    del self._tails[group]

    def _claim(self, group: str) -> tuple[asyncio.Future | None, asyncio.Future]:
        """Take the next place in a group's chain (on the loop, before any await)."""
        previous = self._tails.get(group)
        done: asyncio.Future = self._loop.create_future()
        self._tails[group] = done
        return previous, done

    async def _send_in_order(self, group: str, event: dict[str, Any]) -> None:
        await self._send(group, event, *self._claim(group))

    async def _send(
        self, group: str, event: dict[str, Any], previous: asyncio.Future | None, done: asyncio.Future
    ) -> None:
        try:
            if previous is not None:
                await previous
            await self._layer.group_send(group, {"type": CLIENT_EVENT, "event": event})
        except Exception:  # noqa: BLE001 - at-most-once: the page reloads history after a reconnect
            logger.warning("could not publish %s to %s", event.get("type"), group, exc_info=True)
        finally:
            done.set_result(None)
            if self._tails.get(group) is done:
                del self._tails[group]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
