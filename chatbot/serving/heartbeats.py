"""Worker heartbeats: every live worker keeps one Redis key saying which variants it serves and
how busy it is, refreshed every WORKER_HEARTBEAT_S and expiring after WORKER_HEARTBEAT_TTL_S.
The worker writes them and the web reads them (before it enqueues, on the rollback page, in the
orphan sweep), both through this module, which alone knows the key and the format."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from django.conf import settings

from chatbot.redis_client import get_redis

WORKER_KEY_PREFIX = "chatbot:worker:"


def heartbeat_key(name: str) -> str:
    return WORKER_KEY_PREFIX + name


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    # variant -> {"state": "ready"|"standby"|"loading"|"failed", "detail": str, "since": float}
    variants: dict[str, dict]
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

    def encode(self) -> str:
        fields = asdict(self)
        del fields["name"]  # the key names the worker
        return json.dumps(fields)

    @classmethod
    def decode(cls, name: str, raw: str) -> WorkerStatus | None:
        try:
            data = json.loads(raw)
            return cls(
                name=name,
                variants=dict(data.get("variants", {})),
                running=int(data.get("running", 0)),
                waiting=int(data.get("waiting", 0)),
                reported_at=float(data.get("reported_at", 0)),
            )
        except (ValueError, TypeError, AttributeError):
            return None


def heartbeat_write(status: WorkerStatus) -> None:
    get_redis().set(heartbeat_key(status.name), status.encode(), ex=max(1, int(settings.WORKER_HEARTBEAT_TTL_S)))


def heartbeat_delete(name: str) -> None:
    get_redis().delete(heartbeat_key(name))


def heartbeat_read(name: str) -> WorkerStatus | None:
    raw = get_redis().get(heartbeat_key(name))
    return None if raw is None else WorkerStatus.decode(name, raw)


def worker_status_list() -> list[WorkerStatus]:
    """Workers whose heartbeat is fresh (each heartbeat key expires after WORKER_HEARTBEAT_TTL_S)."""
    client = get_redis()
    keys = sorted(client.scan_iter(match=f"{WORKER_KEY_PREFIX}*", count=100))
    if not keys:
        return []
    statuses = []
    for key, raw in zip(keys, client.mget(keys), strict=True):
        status = None if raw is None else WorkerStatus.decode(key[len(WORKER_KEY_PREFIX) :], raw)
        if status is not None:
            statuses.append(status)
    return statuses
