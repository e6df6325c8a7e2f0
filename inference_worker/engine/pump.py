"""One thread that streams every running request of a worker process. Imports no torch.

One thread wakes once per flush interval (and at once for a request's first token or its end),
reads the tokens each request has so far from its handle, and hands them to that request's sink;
the task threads only wait for the end (and check for cancellation a few times a second). Why not
a thread per request, woken by the engine at every step: each wake-up takes the interpreter lock
from the batch loop, so with a full batch those threads' wake-ups alone slowed every decode step
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from inference_worker.engine.types import FINAL_KINDS, Engine, EngineEvent, RequestHandle

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """What a watched request's updates go to. Called on the pump's thread, one call at a time."""

    def on_event(self, event: EngineEvent) -> None:
        """A "queued" (with its place) or "started" event."""

    def on_tokens(self, tokens: tuple[int, ...], *, final: bool) -> None:
        """Every token generated so far (called when there are new ones, and once at the end)."""

    def flush(self) -> None:
        """Called after each pass over the requests: send what is buffered, if it is time."""


@dataclass(eq=False)
class Watch:
    sink: Sink
    pump: StreamPump | None = None
    handle: RequestHandle | None = None
    done: threading.Event = field(default_factory=threading.Event)
    outcome: EngineEvent | None = None  # the final event, once done
    error: BaseException | None = None  # a sink that raised (the request is cancelled)
    _control: deque = field(default_factory=deque)
    _seen: int = 0
    _first: bool = True


class StreamPump:
    def __init__(self, *, interval_s: float, around_pass: Callable[[], AbstractContextManager] | None = None) -> None:
        self.interval_s = interval_s
        # Entered around each pass over the requests (the worker batches its publishes there).
        self.around_pass = around_pass or nullcontext
        self._watches: list[Watch] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-pump", daemon=True)
        self._thread.start()

    def submit(self, engine: Engine, prompt_ids: list[int], *, sink: Sink, **kwargs) -> Watch:
        """Submit a request to an engine and stream it to `sink`; wait on `watch.done`."""
        watch = Watch(sink=sink, pump=self)
        with self._lock:
            self._watches.append(watch)
        try:
            watch.handle = engine.submit(prompt_ids, listener=lambda event: self._on_event(watch, event), **kwargs)
        except BaseException:
            with self._lock:
                self._watches.remove(watch)
            raise
        self._wake.set()
        return watch

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- on the engine's threads: record and return ---------------------------------------------
    def _on_event(self, watch: Watch, event: EngineEvent) -> None:
        if event.kind == "tokens":
            if watch._first:  # the first token goes out at once; later ones on the pump's beat
                watch._first = False
                self._wake.set()
            return  # the tokens themselves are read from the handle
        watch._control.append(event)
        self._wake.set()

    # -- the pump's thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                busy = bool(self._watches)
            self._wake.wait(self.interval_s if busy else 1.0)
            self._wake.clear()
            with self._lock:
                watches = list(self._watches)
            ended: list[tuple[Watch, EngineEvent]] = []
            try:
                with self.around_pass():
                    for watch in watches:
                        if watch.handle is not None:  # else still being submitted
                            self._service_safely(watch, ended)
            except Exception:  # noqa: BLE001 - the pump must outlive a failed hand-over
                logger.exception("stream pump pass failed")
            # Ended requests are released only after their last deltas have been handed over,
            # so whatever their tasks publish next (the final answer) comes after them.
            for watch, final in ended:
                self._finish(watch, final)

    def _service_safely(self, watch: Watch, ended: list[tuple[Watch, EngineEvent]]) -> None:
        try:
            final = self._service(watch)
        except BaseException as exc:  # noqa: BLE001 - one request's fault ends that request only
            logger.exception("streaming request %s failed", watch.handle.request_id)
            watch.error = exc
            watch.handle.cancel()
            final = EngineEvent("failed", error=f"{type(exc).__name__}: {exc}")
        if final is not None:
            ended.append((watch, final))

    def _service(self, watch: Watch) -> EngineEvent | None:
        """Hand the watch's news to its sink; returns its final event once it has ended."""
        final: EngineEvent | None = None
        while watch._control:
            event = watch._control.popleft()
            if event.kind in FINAL_KINDS:
                final = event
            else:
                watch.sink.on_event(event)
        tokens = final.tokens if final is not None and final.tokens else watch.handle.generated
        finished = final is not None and final.kind == "finished"
        if len(tokens) > watch._seen or finished:
            watch._seen = len(tokens)
            watch.sink.on_tokens(tuple(tokens), final=finished)
        watch.sink.flush()
        return final

    def _finish(self, watch: Watch, final: EngineEvent) -> None:
        watch.outcome = final
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)
        watch.done.set()


def wait_for(watch: Watch, *, every_s: float, check: Callable[[], None]) -> EngineEvent:
    """Block until the watched request ends, calling `check` every `every_s` meanwhile (for
    cancellation and timeouts). Returns the final event."""
    while not watch.done.wait(every_s):
        if watch.pump is not None and not watch.pump.alive:
            # Nothing will end this watch any more (the worker is shutting down): end it here.
            watch.handle.cancel()
            return EngineEvent("failed", error="stream pump stopped")
        check()
    return watch.outcome
