"""Our own continuous batching, the worker's default on every device (`backends.resolve_backend`
says why; bench/engine.py measures it against transformers' paged batching, docs/benchmarks.md).

It keeps continuous batching (a request joins at the next step, a finished or cancelled one
leaves at once) over a dense KV cache: new requests are prefilled together and their cache rows
are merged into the running batch (left-padded to a common length); leaving rows are dropped and
columns that every row has as padding are trimmed.

`DenseBatchManager` holds the request state and the step loop and imports no torch; the tensors
live in a runner (`DenseModelRunner` in `dense_runner.py`), so the manager is unit-tested with a
fake runner. The manager offers the subset of transformers' `ContinuousBatchingManager` that
`BatchingEngine` uses (`add_request`, `cancel_request`, `start`, `stop`, `is_running`, and an
`output_router` with `deliver_batch`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_worker.engine.stream import THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)


@dataclass
class DenseOutput:
    """What one step produced for one request (the fields `BatchingEngine` reads)."""

    request_id: str
    generated_tokens: list[int]
    status: str = "decoding"  # decoding | finished | failed
    error: str | None = None

    def is_finished(self) -> bool:
        return self.status in ("finished", "failed")


@dataclass(frozen=True)
class ReasoningMarkers:
    """The checkpoint's reasoning tokens: `<think>`, `</think>`, and what closes a reasoning the
    engine cuts at its budget (the tokenization of `"\\n</think>\\n\\n"`, the template's own)."""

    think_open: int
    think_close: int
    closing: tuple[int, ...]

    def opens_reasoning(self, prompt_ids: Sequence[int]) -> bool:
        """Whether a generation after this prompt starts inside `<think>` (R1's template ends
        the prompt with `<think>\\n`)."""
        for token in reversed(prompt_ids):
            if token == self.think_close:
                return False
            if token == self.think_open:
                return True
        return False

    def cut_at_budget(self, generated: Sequence[int], budget: int | None) -> bool:
        """Whether the engine closed this generation's reasoning at `budget` (as `DenseBatchManager`
        does: no `</think>` among the first `budget` tokens, and the closing right after them)."""
        if budget is None or self.think_close in generated[:budget]:
            return False
        return tuple(generated[budget : budget + len(self.closing)]) == self.closing


def reasoning_markers(tokenizer: Any) -> ReasoningMarkers | None:
    """The tokenizer's `<think>` / `</think>` tokens and the closing a budget feeds (the template's
    `"\\n</think>\\n\\n"`); None where it has no such tokens (no reasoning budget then)."""
    if tokenizer is None:
        return None
    unk = getattr(tokenizer, "unk_token_id", None)
    think_open, think_close = (tokenizer.convert_tokens_to_ids(token) for token in (THINK_OPEN, THINK_CLOSE))
    if not isinstance(think_open, int) or not isinstance(think_close, int) or unk in (think_open, think_close):
        return None
    closing = tuple(tokenizer.encode("\n" + THINK_CLOSE + "\n\n", add_special_tokens=False))
    if think_close not in closing or closing[0] == think_close:
        return None
    return ReasoningMarkers(think_open=think_open, think_close=think_close, closing=closing)


@dataclass
class _Row:
    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    arrived_at: float = 0.0
    generated: list[int] = field(default_factory=list)
    # The reasoning budget: after this many tokens inside `<think>` the row's next inputs are the
    # closing tokens instead of what it sampled (None: no budget).
    reasoning_budget: int | None = None
    thinking: bool = False
    reasoning_tokens: int = 0
    forcing: list[int] = field(default_factory=list)


class Runner(Protocol):
    """The tensor side. Rows are addressed by their index in the running batch."""

    def step(self, last_tokens: Sequence[int], prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        """Decode one token for every running row (fed its last token) and prefill the prompts,
        whose cache rows go after the running ones; return the rows' next tokens and each
        prompt's first token."""

    def keep(self, indices: Sequence[int]) -> list[int]:
        """Keep only these rows; the others' cache is freed. Returns the kept rows' new order
        (their old indices, by new row index): the runner may reorder rows to copy less."""

    def bind_thread(self) -> None:
        """Called once on the batch loop's thread before its first step."""


# An idle batch loop's thread ends after this long, and the next request starts a new one: torch's
# OpenMP pool belongs to the thread, so an engine that no longer serves (the variant rolled back
# from) does not keep one beside the serving engine's (see inference_worker/torch_threads.py).
LOOP_IDLE_EXIT_S = 30.0


class DenseBatchManager:
    def __init__(
        self,
        *,
        runner: Runner,
        max_batch: int,
        eos_token_ids: Sequence[int],
        prefill_wait_s: float = 0.0,
        idle_exit_s: float = LOOP_IDLE_EXIT_S,
        reasoning: ReasoningMarkers | None = None,
    ) -> None:
        self.runner = runner
        # Without markers (a model with no `<think>` tokens) no budget applies.
        self.reasoning = reasoning
        self.idle_exit_s = idle_exit_s
        self.max_batch = max_batch
        # While rows are decoding, arrivals may wait up to this long to be prefilled together
        # (none wait when the batch is idle). Useful where a prefill is a pass of its own that
        # pauses the running rows; with the packed step it only delays the first token.
        self.prefill_wait_s = prefill_wait_s
        self._held: list[_Row] = []
        self.eos = frozenset(eos_token_ids)
        self.rows: list[_Row] = []
        self.output_router = None  # set by the engine before start()
        self._incoming: queue.Queue[_Row] = queue.Queue()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()  # the loop's thread starts and ends under it
        self._started = False
        self.loop_threads_started = 0

    # -- the manager interface the engine uses ----------------------------------------------
    def add_request(
        self,
        input_ids: list[int],
        request_id: str,
        max_new_tokens: int,
        streaming: bool = True,
        reasoning_budget: int | None = None,
    ) -> str:
        row = _Row(
            request_id=request_id, prompt_ids=list(input_ids), max_new_tokens=max_new_tokens, arrived_at=self._now()
        )
        if self.reasoning is not None and self.reasoning.opens_reasoning(row.prompt_ids):
            row.thinking = True
            row.reasoning_budget = reasoning_budget
        self._incoming.put(row)
        self._ensure_thread()
        self._wake.set()
        return request_id

    def cancel_request(self, request_id: str) -> None:
        with self._lock:
            self._cancelled.add(request_id)
        self._wake.set()

    def start(self) -> None:
        self._started = True
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if not self._started or self._stop.is_set() or self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="dense-batching", daemon=True)
            self.loop_threads_started += 1
            self._thread.start()

    def stop(self, block: bool = True, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        with self._thread_lock:
            thread = self._thread
        if block and thread is not None:
            thread.join(timeout)

    def is_running(self) -> bool:
        """Started and not stopped (an idle loop's thread may have ended; a request starts one)."""
        return self._started and not self._stop.is_set()

    @property
    def loop_thread_alive(self) -> bool:
        with self._thread_lock:
            return self._thread is not None and self._thread.is_alive()

    def _now(self) -> float:
        return time.monotonic()

    def cache_holders(self) -> set[str]:
        return {row.request_id for row in list(self.rows)}

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        self.runner.bind_thread()
        idle_since: float | None = None
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception as exc:  # noqa: BLE001 - every request in the batch fails, the loop goes on
                logger.exception("batch step failed")
                self._fail_all(f"{type(exc).__name__}: {exc}")
                worked = True
            if worked:
                idle_since = None
                continue
            idle_since = idle_since if idle_since is not None else self._now()
            if self.idle_exit_s and self._now() - idle_since >= self.idle_exit_s and self._exit_if_idle():
                return
            self._wake.wait(0.1)
            self._wake.clear()
        with self._thread_lock:
            self._thread = None

    def _exit_if_idle(self) -> bool:
        """End the loop's thread if nothing arrived meanwhile (`add_request` then starts a new
        one: it puts its row before it looks for the thread, both under the same lock)."""
        with self._thread_lock:
            if self.rows or self._held or not self._incoming.empty():
                return False
            self._thread = None
            return True

    def step(self) -> bool:
        """One iteration: drop cancelled rows, then one pass that decodes the running rows and
        prefills the arrivals. Returns False when there was nothing to do."""
        self._drop_cancelled()
        arrivals = self._take_arrivals()
        if not arrivals and not self.rows:
            return False
        next_tokens, first_tokens = self.runner.step(
            [row.generated[-1] for row in self.rows], [row.prompt_ids for row in arrivals]
        )
        outputs = [self._advance(row, token) for row, token in zip(self.rows, next_tokens, strict=True)]
        self.rows.extend(arrivals)
        outputs += [self._advance(row, token) for row, token in zip(arrivals, first_tokens, strict=True)]
        finished = {o.request_id for o in outputs if o.is_finished()}
        if finished:
            self._keep_rows(lambda row: row.request_id not in finished)
        if self.output_router is not None:
            self.output_router.deliver_batch(outputs)
        return True

    def _advance(self, row: _Row, token: int) -> DenseOutput:
        if row.thinking and not row.forcing and self._over_budget(row) and token != self.reasoning.think_close:
            row.forcing = list(self.reasoning.closing)
        forced = bool(row.forcing)
        if forced:
            # The row's reasoning is being closed: what it sampled is dropped and the closing
            # token becomes its next input, in this same batch (no other row is touched).
            token = row.forcing.pop(0)
        row.generated.append(token)
        if row.thinking:
            self._follow_reasoning(row, token, forced=forced)
        done = token in self.eos or len(row.generated) >= row.max_new_tokens
        return DenseOutput(row.request_id, list(row.generated), "finished" if done else "decoding")

    def _follow_reasoning(self, row: _Row, token: int, *, forced: bool) -> None:
        if token == self.reasoning.think_close:
            row.thinking = False
            return
        if not forced:
            row.reasoning_tokens += 1

    @staticmethod
    def _over_budget(row: _Row) -> bool:
        """The row has reasoned for its whole budget: its next token closes the reasoning (the
        model's own `</think>`, or else the closing fed in its place)."""
        return row.reasoning_budget is not None and row.reasoning_tokens >= row.reasoning_budget

    def _take_arrivals(self) -> list[_Row]:
        while True:
            try:
                row = self._incoming.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                if row.request_id in self._cancelled:
                    self._cancelled.discard(row.request_id)
                    continue
            self._held.append(row)
        free = self.max_batch - len(self.rows)
        if not self._held or free <= 0:
            return []
        waited = self._now() - self._held[0].arrived_at
        if self.rows and len(self._held) < free and waited < self.prefill_wait_s:
            return []  # keep decoding; prefill these together a little later
        arrivals, self._held = self._held[:free], self._held[free:]
        return arrivals

    def _drop_cancelled(self) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
        if not cancelled:
            return
        present = {row.request_id for row in self.rows} | {row.request_id for row in self._held}
        self._held = [row for row in self._held if row.request_id not in cancelled]
        self._keep_rows(lambda row: row.request_id not in cancelled)
        # Cancellations for requests not yet taken in stay pending until they arrive.
        with self._lock:
            self._cancelled |= cancelled - present

    def _keep_rows(self, keep) -> None:
        indices = [i for i, row in enumerate(self.rows) if keep(row)]
        if len(indices) != len(self.rows):
            order = self.runner.keep(indices)
            self.rows = [self.rows[i] for i in order]

    def _fail_all(self, error: str) -> None:
        failed = [DenseOutput(row.request_id, list(row.generated), "failed", error) for row in self.rows]
        self.rows = []
        try:
            self.runner.keep([])
        except Exception:  # noqa: BLE001
            logger.exception("could not reset the batch")
        if self.output_router is not None and failed:
            self.output_router.deliver_batch(failed)
