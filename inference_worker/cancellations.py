"""Cancellation flags of a worker's running generations, read for all of them at once.

The web cancels a generation by raising a Redis flag (`services.generation_cancel`). Each task
thread used to poll its own flag every 0.25 s: with 32 answers in flight, 128 Redis round trips
and as many thread wake-ups a second, each wake-up taking the GIL from the batch loop (1,024 a
second at 256 sessions). Here one thread reads the flags of every watched generation with one
MGET per interval and cancels the flagged requests; the task threads only wait for their end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from chatbot.redis_client import cancel_key, get_redis

logger = logging.getLogger(__name__)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class CancelWatcher:
    def __init__(self, *, interval_s: float, redis_client: Callable[[], Any] = get_redis) -> None:
        self.interval_s = interval_s
        self._redis = redis_client
        # Usually one request per generation; two when a run of a generation overlaps a rerun
        # of it (a redelivered task while the first still runs): each is cancelled, and each
        # task's unwatch leaves the other's watch in place.
        self._watched: dict[int, list[Cancellable]] = {}
        # id(request) -> (the key saying whether staff follow its conversation, whom to tell).
        self._staff: dict[int, tuple[str, Callable[[bool], None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)
        self._thread.start()

    def watch(
        self,
        generation_id: int,
        request: Cancellable,
        *,
        staff_key: str | None = None,
        on_staff: Callable[[bool], None] | None = None,
    ) -> None:
        """Cancel `request` once the generation's flag is raised (it may be raised already).
        With `staff_key`, each poll also reads that key in the same MGET and tells `on_staff`
        whether it is set (whether staff follow the answer's conversation)."""
        with self._lock:
            self._watched.setdefault(generation_id, []).append(request)
            if staff_key is not None and on_staff is not None:
                self._staff[id(request)] = (staff_key, on_staff)

    def unwatch(self, generation_id: int, request: Cancellable) -> None:
        with self._lock:
            requests = self._watched.get(generation_id, [])
            self._staff.pop(id(request), None)
            if request in requests:
                requests.remove(request)
            if not requests:
                self._watched.pop(generation_id, None)

    @property
    def watched(self) -> int:
        return len(self._watched)

    def poll(self) -> list[int]:
        """Read every watched generation's flag (one MGET) and cancel the flagged requests, which
        are no longer watched. Returns their generation ids."""
        with self._lock:
            watched = list(self._watched.items())
            staff = list(self._staff.values())
        if not watched:
            return []
        values = self._redis().mget(
            [cancel_key(generation_id) for generation_id, _ in watched] + [key for key, _ in staff]
        )
        flags = values[: len(watched)]
        for (_, on_staff), value in zip(staff, values[len(watched) :], strict=True):
            on_staff(value is not None)
        cancelled = []
        for (generation_id, requests), flag in zip(watched, flags, strict=True):
            if flag is None:
                continue
            for request in list(requests):
                request.cancel()
                self.unwatch(generation_id, request)
            cancelled.append(generation_id)
        return cancelled

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - Redis away: the task's final write re-reads the row anyway
                if not failing:  # once per outage, not four times a second
                    logger.warning("could not read cancellation flags", exc_info=True)
                failing = True
            else:
                if failing:
                    logger.info("reading cancellation flags again")
                failing = False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
