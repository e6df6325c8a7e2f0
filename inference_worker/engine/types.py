"""What the worker and an engine exchange: a request's handle and its events, the step records,
and the `Engine` interface that both engines (`engine.BatchingEngine` in this process,
`engine_process.RemoteEngine` in a child) implement. Imports no torch, so the stream pump and
its tests use these without loading a model's libraries.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# The kinds of event that end a request: nothing comes after one of them.
FINAL_KINDS = ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class StepRecord:
    """One forward pass: which requests received a token from it."""

    index: int
    request_ids: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class EngineEvent:
    kind: str  # "queued" | "started" | "tokens" | "finished" | "failed" | "cancelled" | "idle"
    tokens: tuple[int, ...] = ()
    position: int | None = None
    error: str = ""


Listener = Callable[[EngineEvent], None]


@dataclass
class RequestHandle:
    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    reasoning_budget: int | None = None  # tokens inside `<think>` before the engine closes it
    submitted_at: float = field(default_factory=time.perf_counter)
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    generated: tuple[int, ...] = ()
    status: str = "waiting"  # waiting | running | finished | failed | cancelled
    _events: queue.Queue = field(default_factory=queue.Queue, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    # Where the engine's events go: this request's queue (read with `events()`), or a listener
    # called on the batch loop's thread (the worker's `StreamPump`), which must return at once.
    _listener: Listener | None = field(default=None, repr=False)

    def _emit(self, event: EngineEvent) -> None:
        if self._listener is not None:
            self._listener(event)
        else:
            self._events.put(event)

    @property
    def queue_wait_s(self) -> float | None:
        return None if self.admitted_at is None else self.admitted_at - self.submitted_at

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.submitted_at

    def events(self, *, poll_s: float = 0.1) -> Iterator[EngineEvent]:
        """Yield events until the request ends, and an "idle" event every `poll_s` without one.
        One event per step: for tests and benchmarks. The worker streams through its
        `StreamPump` (`pump.py`) instead, which coalesces."""
        while True:
            try:
                event = self._events.get(timeout=poll_s)
            except queue.Empty:
                yield EngineEvent("idle")
                continue
            yield event
            if event.kind in FINAL_KINDS:
                return

    def cancel(self) -> None:
        if self._engine is not None:
            self._engine.cancel(self.request_id)


@runtime_checkable
class Engine(Protocol):
    """One variant's engine as the worker uses it."""

    variant: str
    tokenizer: Any
    # Tokens generated since the engine started (the worker's tokens/s metric).
    tokens_generated: int

    def submit(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int | None = None,
        request_id: str | None = None,
        listener: Listener | None = None,
        arrival: float | None = None,
        reasoning_budget: int | None = None,
    ) -> RequestHandle:
        """Queue a request. Its events go to `listener` (called on the engine's thread; it must
        return at once), or else to the handle's `events()`. Beyond the batch it waits in order
        of `arrival` (wall-clock seconds: when the customer's message was saved; now when None).
        After `reasoning_budget` tokens inside `<think>` the engine closes the reasoning by
        feeding the closing tokens as the request's next inputs (None: no budget).
        Raises RuntimeError when the engine is not running."""
        ...

    def cancel(self, request_id: str) -> None:
        """Take a request out of the queue or the batch; its "cancelled" event follows."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine; the requests it still holds fail."""
        ...

    @property
    def running(self) -> bool: ...

    @property
    def exited(self) -> bool:
        """Whether the engine is gone by itself (its process died): the worker starts another."""
        ...

    @property
    def active_count(self) -> int:
        """Requests in the batch."""
        ...

    @property
    def waiting_count(self) -> int:
        """Requests waiting for a place in the batch."""
        ...
