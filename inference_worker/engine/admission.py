"""Backpressure in front of the batch: at most `max_active` requests run, the rest wait in order.

Imports no torch; unit-tested without a model. The engine calls `submit` when a request arrives
and `release` when one finishes or is cancelled; both return the requests to start now, and
`positions` tells each waiting request its place (1 = next).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class AdmissionQueue(Generic[T]):
    def __init__(self, *, max_active: int) -> None:
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        self.max_active = max_active
        self._active: set[str] = set()
        self._waiting: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, request_id: str, item: T) -> list[tuple[str, T]]:
        """Queue a request; return those to start now (in order)."""
        with self._lock:
            if request_id in self._active or request_id in self._waiting:
                raise ValueError(f"request {request_id} was already submitted")
            self._waiting[request_id] = item
            return self._admit()

    def release(self, request_id: str) -> list[tuple[str, T]]:
        """A request finished, failed or was cancelled (running or waiting): free its place."""
        with self._lock:
            self._active.discard(request_id)
            self._waiting.pop(request_id, None)
            return self._admit()

    def _admit(self) -> list[tuple[str, T]]:
        started = []
        while self._waiting and len(self._active) < self.max_active:
            request_id, item = self._waiting.popitem(last=False)
            self._active.add(request_id)
            started.append((request_id, item))
        return started

    def positions(self) -> dict[str, int]:
        with self._lock:
            return {request_id: place for place, request_id in enumerate(self._waiting, start=1)}

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)
