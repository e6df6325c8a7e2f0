"""Reads about model serving: the active variant and what the running workers report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.conf import settings

from chatbot.redis_client import WORKER_KEY_PREFIX, get_redis
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


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    variants: dict[str, dict]  # variant -> {"state": "ready"|"standby"|"loading"|"failed", "detail": str}
    running: int
    waiting: int
    reported_at: float

    def can_serve(self, variant: str) -> bool:
        """Serves the variant: loaded, or checked and loading on first use (what the rollback
        switch and the admin ask)."""
        return self.variants.get(variant, {}).get("state") in ("ready", "standby")

    def takes_messages(self, variant: str) -> bool:
        """Takes messages for the variant (what the web asks before it enqueues one): it serves
        it, or is loading it (its first load, or a new engine process after one died) for less
        than WORKER_LOADING_GRACE_S, and the messages wait in its queue meanwhile. A load that
        takes longer, or failed, has the web tell the customers at once."""
        if self.can_serve(variant):
            return True
        state = self.variants.get(variant, {})
        if state.get("state") != "loading":
            return False
        return self.reported_at - float(state.get("since", 0)) < settings.WORKER_LOADING_GRACE_S


def worker_status_list() -> list[WorkerStatus]:
    """Workers whose heartbeat is fresh (each heartbeat key expires after WORKER_HEARTBEAT_TTL_S)."""
    client = get_redis()
    keys = sorted(client.scan_iter(match=f"{WORKER_KEY_PREFIX}*", count=100))
    if not keys:
        return []
    statuses = []
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        statuses.append(
            WorkerStatus(
                name=key[len(WORKER_KEY_PREFIX) :],
                variants=data.get("variants", {}),
                running=int(data.get("running", 0)),
                waiting=int(data.get("waiting", 0)),
                reported_at=float(data.get("at", 0)),
            )
        )
    return statuses


def variant_is_served(*, variant: str) -> bool:
    """True when at least one live worker takes messages for the variant."""
    return any(worker.takes_messages(variant) for worker in worker_status_list())
