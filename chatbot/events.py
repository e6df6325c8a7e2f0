"""The one way the web side sends events to sockets: to a Channels group, after the commit.

Zulip's `send_event_on_commit` is the model: an event about rows that a rollback could undo must
never reach a browser, so it leaves only once the transaction is committed.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

# Consumers route group messages of this type to the socket (see docs/protocol.md).
CLIENT_EVENT = "client.event"


def send_event_now(group: str, event: dict[str, Any]) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group, {"type": CLIENT_EVENT, "event": event})
    except Exception:  # noqa: BLE001 - the channel layer is at-most-once; the page reloads history
        logger.warning("could not send %s to %s", event.get("type"), group, exc_info=True)


def send_event_on_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: send_event_now(group, event))


def send_events_now(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Many events at once, in order: one round trip to Redis with the pub/sub layer."""
    if events:
        async_to_sync(send_events)(events)


async def send_events(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Many events at once, in order, from an event loop (a socket's consumer), for rows already
    committed: one round trip to Redis with the pub/sub layer."""
    if not events:
        return
    layer = get_channel_layer()
    messages = [(group, {"type": CLIENT_EVENT, "event": event}) for group, event in events]
    try:
        send_many = getattr(layer, "group_send_many", None)
        if send_many is not None:
            await send_many(messages)
        else:
            for group, message in messages:
                await layer.group_send(group, message)
    except Exception:  # noqa: BLE001 - the channel layer is at-most-once; the page reloads history
        logger.warning("could not send %d events", len(messages), exc_info=True)
