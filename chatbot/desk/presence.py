"""Which agents have the desk open: every desk socket keeps an entry in one Redis sorted set,
scored by when it lapses (DESK_PRESENCE_TTL_S after its last sign of life), so a socket whose
process died without closing stops counting by itself. An agent is online when at least one of
their sockets is live and their chosen presence (`AgentProfile.presence`) is "online"."""

from __future__ import annotations

import time

from django.conf import settings

from chatbot.redis_client import get_redis

PRESENCE_KEY = "chatbot:desk:sockets"
# Set while a desk socket follows the conversation (refreshed by its pings, lapsing
# DESK_PRESENCE_TTL_S after the last): the worker publishes a conversation's staff-only frames
# (the reasoning) only while it is set, so nothing goes to a channel nobody reads.
STAFF_WATCH_KEY = "chatbot:desk:watching:{public_id}"


def _now() -> float:
    return time.time()


def staff_watch_key(public_id: str) -> str:
    return STAFF_WATCH_KEY.format(public_id=public_id)


def presence_touch(*, user_id: int, channel_name: str, watching: str | None = None) -> None:
    """A desk socket is live (on connect, and on each of its pings), and follows the conversation
    `watching` (a public id), if any: one round trip for both."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.zadd(PRESENCE_KEY, {f"{user_id}:{channel_name}": _now() + settings.DESK_PRESENCE_TTL_S})
    if watching:
        pipe.set(staff_watch_key(watching), "1", ex=max(1, round(settings.DESK_PRESENCE_TTL_S)))
    pipe.execute()


def conversation_watch(*, public_id: str) -> None:
    """A desk socket follows this conversation now. (Nothing is removed when one stops: another
    socket may follow it too; the key lapses DESK_PRESENCE_TTL_S after the last ping.)"""
    get_redis().set(staff_watch_key(public_id), "1", ex=max(1, round(settings.DESK_PRESENCE_TTL_S)))


def presence_drop(*, user_id: int, channel_name: str) -> None:
    get_redis().zrem(PRESENCE_KEY, f"{user_id}:{channel_name}")


def connected_agent_ids() -> set[int]:
    """Users with at least one live desk socket."""
    client = get_redis()
    now = _now()
    client.zremrangebyscore(PRESENCE_KEY, "-inf", now)
    return {int(member.split(":", 1)[0]) for member in client.zrangebyscore(PRESENCE_KEY, now, "+inf")}
