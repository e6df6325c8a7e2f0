"""One synchronous Redis client per process, for the small keys the web and workers share:
worker heartbeats (`chatbot.serving.heartbeats`) and generation cancellation flags. (Celery and
Channels keep their own.)"""

from __future__ import annotations

import functools

import redis
from django.conf import settings

CANCEL_KEY = "chatbot:cancel:{generation_id}"
CANCEL_TTL_S = 3600


@functools.lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2, decode_responses=True)


def cancel_key(generation_id: int) -> str:
    return CANCEL_KEY.format(generation_id=generation_id)
