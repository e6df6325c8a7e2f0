"""Which agents have the desk open: every desk socket keeps an entry in one Redis sorted set,
scored by when it lapses (DESK_PRESENCE_TTL_S after its last sign of life), so a socket whose
process died without closing stops counting by itself. An agent is online when at least one of
their sockets is live and their chosen presence (`AgentProfile.presence`) is "online"."""

from __future__ import annotations

import time

from django.conf import settings

from chatbot.redis_client import get_redis

PRESENCE_KEY = "chatbot:desk:sockets"


def _now() -> float:
    return time.time()


def presence_touch(*, user_id: int, channel_name: str) -> None:
    """A desk socket is live (on connect, and on each of its pings)."""
    get_redis().zadd(PRESENCE_KEY, {f"{user_id}:{channel_name}": _now() + settings.DESK_PRESENCE_TTL_S})


def presence_drop(*, user_id: int, channel_name: str) -> None:
    get_redis().zrem(PRESENCE_KEY, f"{user_id}:{channel_name}")


def connected_agent_ids() -> set[int]:
    """Users with at least one live desk socket."""
    client = get_redis()
    now = _now()
    client.zremrangebyscore(PRESENCE_KEY, "-inf", now)
    return {int(member.split(":", 1)[0]) for member in client.zrangebyscore(PRESENCE_KEY, now, "+inf")}
