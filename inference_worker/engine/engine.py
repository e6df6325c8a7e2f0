"""One batching engine per model variant per worker process.

Iteration-level ("continuous") batching: every running request takes part in each forward pass,
a new one joins at the next step, a finished or cancelled one leaves at once. Two backends do the
batching (`backends.resolve_backend` says which runs, and why dense is the default): our
`DenseBatchManager` ("dense", `dense.py`: a dense left-padded cache on the CPU, or on CUDA a slot
per request with decode steps replayed from CUDA graphs) and transformers'
`ContinuousBatchingManager` ("paged": paged KV cache). Around either, what is ours:

- admission (`AdmissionQueue`): at most `max_batch` requests in the batch, the rest wait in
  order and are told their place;
- routing: the manager's output router is replaced by one that hands each step's tokens straight
  to each request's own queue (no shared queue to poll) and records which requests each forward
  pass served (`steps`), so batching is checked on the engine's own records;
- per-request timing (queue wait, time to first token) and cancellation that frees the slot and
  the cache blocks.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from transformers import GenerationConfig
from transformers.generation.continuous_batching.continuous_api import OutputRouter
from transformers.generation.continuous_batching.requests import GenerationOutput

from inference_worker.engine.admission import AdmissionQueue
from inference_worker.engine.backends import BACKENDS, DEFAULT_BACKEND
from inference_worker.engine.dense import reasoning_markers
from inference_worker.engine.types import EngineEvent, Listener, RequestHandle, StepRecord

logger = logging.getLogger(__name__)


class _RecordingRouter(OutputRouter):
    """Hands each output to its request's handle and records the step it came from."""

    def __init__(self, engine: BatchingEngine) -> None:
        super().__init__()
        self._engine = engine

    def deliver(self, output: GenerationOutput) -> None:
        self._engine._on_outputs([output], step=False)

    def deliver_batch(self, outputs: list[GenerationOutput]) -> None:
        self._engine._on_outputs(outputs, step=True)


def kv_cache_bytes(model: Any, tokens: int) -> int:
    """Bytes of keys and values that `tokens` cached tokens take, in the model's dtype."""
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    itemsize = model.get_input_embeddings().weight.dtype.itemsize
    return 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize * tokens


def free_gpu_bytes(device: Any) -> int:
    """The device's free memory, counting what PyTorch holds in its cache but no tensor uses."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def ensure_cache_fits(model: Any, max_batch: int, context_tokens: int, free_bytes: int) -> None:
    """Both backends hold a cache for a full batch of full-length requests, allocated when the
    engine starts. Where that alone cannot fit the free GPU memory, say so with the settings
    that size it, instead of an out-of-memory error from deep in the first allocation."""
    needed = kv_cache_bytes(model, max_batch * context_tokens)
    if needed > free_bytes:
        raise ValueError(
            f"the KV cache for {max_batch} requests (ENGINE_MAX_BATCH) of {context_tokens} tokens "
            f"(CONTEXT_BUDGET_TOKENS + MAX_NEW_TOKENS) needs {needed / 2**30:.1f} GiB, and "
            f"{free_bytes / 2**30:.1f} GiB of GPU memory is free: lower one of those settings"
        )


class BatchingEngine:
    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        variant: str,
        max_batch: int,
        max_new_tokens: int,
        context_tokens: int = 1024,
        page_size: int = 64,
        max_batch_tokens: int = 512,
        generation_config: GenerationConfig | None = None,
        backend: str = DEFAULT_BACKEND,
        loop_threads: int = 0,
        prefill_wait_s: float = 0.0,
        steps_kept: int = 10_000,
        paged_options: dict[str, Any] | None = None,
        dense_cache: str = "auto",
        cuda_graphs: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.variant = variant
        self.max_batch = max_batch
        self.max_new_tokens = max_new_tokens
        self.generation_config = generation_config or model.generation_config
        if backend not in BACKENDS:  # resolved already: "auto" is `backends.resolve_backend`'s
            raise ValueError(f"unknown engine backend {backend!r}: 'paged' or 'dense'")
        self.backend = backend
        self.loop_threads = loop_threads
        self.prefill_wait_s = prefill_wait_s
        self.context_tokens = context_tokens
        self.page_size = page_size
        self.max_batch_tokens = max_batch_tokens
        # Further `ContinuousBatchingConfig` fields for the paged backend (e.g. `use_cuda_graph`).
        self.paged_options = dict(paged_options or {})
        # Dense backend: "padded" (`dense_runner.py`: a left-padded cache, the CPU's) or "slots"
        # (`slot_runner.py`: a slot per request, decode steps replayed from CUDA graphs when
        # `cuda_graphs` and the model is on CUDA); "auto": slots on CUDA where the model allows.
        if dense_cache not in ("auto", "padded", "slots"):
            raise ValueError(f"unknown dense cache {dense_cache!r}: 'auto', 'padded' or 'slots'")
        self.dense_cache = dense_cache
        self.cuda_graphs = cuda_graphs
        self.reasoning = reasoning_markers(tokenizer)
        self._budget_ignored_logged = False
        self._admission: AdmissionQueue[RequestHandle] = AdmissionQueue(max_active=max_batch)
        self._handles: dict[str, RequestHandle] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._step_index = itertools.count()
        self.steps: deque[StepRecord] = deque(maxlen=steps_kept)
        self.tokens_generated = 0
        self._manager = None
        # Called on the batch loop's thread after each delivery of outputs (a step's, or one
        # request's), once every listener has had its events: `engine_process` sends them there.
        self.after_outputs: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> BatchingEngine:
        if self.model.device.type == "cuda":
            ensure_cache_fits(self.model, self.max_batch, self.context_tokens, free_gpu_bytes(self.model.device))
        manager = self._dense_manager() if self.backend == "dense" else self._paged_manager()
        # Installed before start(): the batch loop takes the router when its thread starts.
        manager.output_router = _RecordingRouter(self)
        manager.start()
        self._manager = manager
        return self

    def _paged_manager(self):
        """transformers' continuous batching: paged KV cache (ENGINE_BACKEND=paged)."""
        from transformers import ContinuousBatchingConfig

        # The cache is sized for a full batch of full-length requests, not from free memory (the
        # library's default takes 90% of what is free, which on a CPU host is gigabytes to zero).
        pages_per_request = -(-self.context_tokens // self.page_size) + 1
        cb_config = ContinuousBatchingConfig(
            max_requests_per_batch=self.max_batch,
            page_size=self.page_size,
            num_blocks=self.max_batch * pages_per_request,
            max_batch_tokens=max(self.max_batch_tokens, self.max_batch),
            **self.paged_options,
        )
        return self.model.init_continuous_batching(
            generation_config=self.generation_config, continuous_batching_config=cb_config
        )

    def _dense_manager(self):
        """Our continuous batching over a dense cache (ENGINE_BACKEND=dense or auto)."""
        from inference_worker.engine.dense import DenseBatchManager
        from inference_worker.engine.dense_runner import DenseModelRunner
        from inference_worker.engine.qwen2 import packs_prefill_with_decode

        eos = self.generation_config.eos_token_id
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        pad = self.generation_config.pad_token_id
        model_args = dict(
            model=self.model, generation_config=self.generation_config, pad_token_id=pad if pad is not None else 0
        )
        on_cuda = self.model.device.type == "cuda"
        if self.dense_cache == "slots" or (
            self.dense_cache == "auto" and on_cuda and packs_prefill_with_decode(self.model)
        ):
            from inference_worker.engine.slot_runner import SlotModelRunner

            runner = SlotModelRunner(
                **model_args, slots=self.max_batch, columns=self.context_tokens, graphs=self.cuda_graphs and on_cuda
            )
        else:
            runner = DenseModelRunner(**model_args, threads=self.loop_threads)
        return DenseBatchManager(
            runner=runner,
            max_batch=self.max_batch,
            eos_token_ids=[e for e in eos_ids if e is not None],
            prefill_wait_s=self.prefill_wait_s,
            reasoning=self.reasoning,
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self._manager is not None:
            self._manager.stop(block=True, timeout=timeout)
            self._manager = None
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for handle in handles:
            self._end(handle, EngineEvent("failed", error="engine stopped"), status="failed")

    @property
    def running(self) -> bool:
        return self._manager is not None and self._manager.is_running()

    @property
    def exited(self) -> bool:
        """Whether the engine is gone by itself, to be started anew (the process of an
        `engine_process.RemoteEngine` can die); one in this process never is."""
        return False

    # -- requests ----------------------------------------------------------------------------
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
        """Queue a request; beyond `max_batch` it waits in order of `arrival` (wall-clock
        seconds: when the customer's message was saved; now when None). After
        `reasoning_budget` tokens inside `<think>` the dense backend closes the reasoning (the
        paged backend has no per-row way to, and ignores it)."""
        if self._manager is None:
            raise RuntimeError(f"engine for {self.variant} is not running")
        request_id = request_id or f"r{next(self._ids)}"
        handle = RequestHandle(
            request_id=request_id,
            prompt_ids=list(prompt_ids),
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            reasoning_budget=reasoning_budget,
            _engine=self,
            _listener=listener,
        )
        if reasoning_budget is not None and self.backend != "dense" and not self._budget_ignored_logged:
            self._budget_ignored_logged = True
            logger.warning("engine %s: the %s backend has no reasoning budget", self.variant, self.backend)
        with self._lock:
            self._handles[request_id] = handle
            started = self._admission.submit(request_id, handle, arrival=arrival)
        self._start(started)
        self._announce_positions()
        return handle

    def cancel(self, request_id: str) -> None:
        """Take a request out of the queue or the batch; its slot and cache blocks are freed."""
        with self._lock:
            handle = self._handles.get(request_id)
            if handle is None:
                return
            was_running = handle.status == "running"
        if was_running and self._manager is not None:
            self._manager.cancel_request(request_id)
        self._end(handle, EngineEvent("cancelled"), status="cancelled")

    def _start(self, started: list[tuple[str, RequestHandle]]) -> None:
        now = time.perf_counter()
        for request_id, handle in started:
            handle.admitted_at = now
            handle.status = "running"
            handle._emit(EngineEvent("started"))
            budget = {"reasoning_budget": handle.reasoning_budget} if self.backend == "dense" else {}
            self._manager.add_request(
                handle.prompt_ids,
                request_id=request_id,
                max_new_tokens=handle.max_new_tokens,
                streaming=True,
                **budget,
            )

    def _announce_positions(self) -> None:
        positions = self._admission.positions()
        with self._lock:
            for request_id, place in positions.items():
                handle = self._handles.get(request_id)
                if handle is not None:
                    handle._emit(EngineEvent("queued", position=place))

    def _end(self, handle: RequestHandle, event: EngineEvent, *, status: str) -> None:
        with self._lock:
            if self._handles.pop(handle.request_id, None) is None:
                return  # already ended
            started = self._admission.release(handle.request_id)
        handle.status = status
        handle.finished_at = time.perf_counter()
        handle._emit(event)
        if started and self._manager is not None:
            self._start(started)
        if started:
            self._announce_positions()

    # -- called on the manager's generation thread ---------------------------------------------
    def _on_outputs(self, outputs: list[GenerationOutput], *, step: bool) -> None:
        try:
            self._deliver(outputs, step=step)
        finally:  # what was emitted goes out even if a later output's handling raised
            if self.after_outputs is not None:
                self.after_outputs()

    def _deliver(self, outputs: list[GenerationOutput], *, step: bool) -> None:
        now = time.perf_counter()
        served = []
        for output in outputs:
            with self._lock:
                handle = self._handles.get(output.request_id)
            if handle is None:
                continue  # cancelled meanwhile
            tokens = tuple(output.generated_tokens)
            new = len(tokens) - len(handle.generated)
            if new > 0:
                served.append(output.request_id)
                self.tokens_generated += new
                if handle.first_token_at is None:
                    handle.first_token_at = now
            handle.generated = tokens
            if output.error or str(getattr(output.status, "name", output.status)).lower() == "failed":
                self._end(
                    handle,
                    EngineEvent("failed", tokens=tokens, error=output.error or "generation failed"),
                    status="failed",
                )
            elif output.is_finished():
                self._end(handle, EngineEvent("finished", tokens=tokens), status="finished")
            else:
                handle._emit(EngineEvent("tokens", tokens=tokens))
        if step and served:
            self.steps.append(StepRecord(index=next(self._step_index), request_ids=tuple(served), at=now))

    # -- introspection -----------------------------------------------------------------------
    @property
    def active_count(self) -> int:
        return self._admission.active_count

    @property
    def waiting_count(self) -> int:
        return self._admission.waiting_count

    def requests_holding_cache(self) -> set[str]:
        """Ids of the requests that hold KV cache (empty before the first batch)."""
        if hasattr(self._manager, "cache_holders"):
            return self._manager.cache_holders()
        processor = getattr(self._manager, "batch_processor", None)
        if processor is None:
            return set()
        holders: set[str] = set()
        for allocator in processor.cache.cache_allocators.values():
            holders.update(request_id for request_id, blocks in list(allocator.block_table.items()) if blocks)
        return holders
