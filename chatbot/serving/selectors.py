"""Reads about model serving: the active variant and what the running workers report."""

from __future__ import annotations

import time

from django.conf import settings

from chatbot.serving.heartbeats import worker_status_list
from chatbot.serving.models import ServingState

_cache: dict[str, tuple[float, str]] = {}


def _now() -> float:
    return time.monotonic()


def active_variant_get(*, fresh: bool = False) -> str:
    """The variant new generations run on. Cached per process for ACTIVE_VARIANT_CACHE_S, so a
    switch reaches every web process within that time without a query per message."""
    cached = _cache.get("active")
    if not fresh and cached is not None and _now() - cached[0] < settings.ACTIVE_VARIANT_CACHE_S:
        return cached[1]
    state = ServingState.objects.filter(pk=1).first()
    variant = state.active_variant if state is not None else settings.DEFAULT_MODEL_VARIANT
    _cache["active"] = (_now(), variant)
    return variant


def active_variant_cache_clear() -> None:
    _cache.clear()


def variant_is_served(*, variant: str) -> bool:
    """True when at least one live worker takes messages for the variant."""
    return any(worker.takes_messages(variant) for worker in worker_status_list())
