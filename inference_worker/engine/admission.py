"""Backpressure in front of the batch: at most `max_active` requests run, the rest wait in order.

Imports no torch; unit-tested without a model. The engine calls `submit` when a request arrives
and `release` when one finishes or is cancelled; both return the requests to start now, and
`positions` tells each waiting request its place (1 = next).

The order is the requests' arrival: the time the customer's message was saved, which the worker
passes along (`arrival`), or else the time of the submit. Messages saved a few milliseconds apart
reach the engine through different task threads, in either order; and an answer whose engine
process died comes back with its first arrival, so it does not go to the back of the line.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class AdmissionQueue(Generic[T]):
    def __init__(self, *, max_active: int) -> None:
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        self.max_active = max_active
        self._active: set[str] = set()
        self._waiting: dict[str, T] = {}
        self._order: list[tuple[float, int, str]] = []  # (arrival, submit number, id), sorted
        self._submits = itertools.count()
        self._lock = threading.Lock()

    def submit(self, request_id: str, item: T, *, arrival: float | None = None) -> list[tuple[str, T]]:
        """Queue a request in its place by `arrival` (wall-clock seconds; now when None); return
        those to start now (in order)."""
        with self._lock:
            if request_id in self._active or request_id in self._waiting:
                raise ValueError(f"request {request_id} was already submitted")
            self._waiting[request_id] = item
            key = (time.time() if arrival is None else arrival, next(self._submits), request_id)
            bisect.insort(self._order, key)
            return self._admit()

    def release(self, request_id: str) -> list[tuple[str, T]]:
        """A request finished, failed or was cancelled (running or waiting): free its place."""
        with self._lock:
            self._active.discard(request_id)
            if request_id in self._waiting:
                del self._waiting[request_id]
                self._order = [key for key in self._order if key[2] != request_id]
            return self._admit()

    def _admit(self) -> list[tuple[str, T]]:
        started = []
        while self._order and len(self._active) < self.max_active:
            _, _, request_id = self._order.pop(0)
            self._active.add(request_id)
            started.append((request_id, self._waiting.pop(request_id)))
        return started

    def positions(self) -> dict[str, int]:
        with self._lock:
            return {request_id: place for place, (_, _, request_id) in enumerate(self._order, start=1)}

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)
