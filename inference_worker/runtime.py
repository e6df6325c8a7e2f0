"""What one worker process holds: an engine per model variant it serves, the event publisher,
and the heartbeat that tells the web which variants this worker can serve."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django import db
from django.conf import settings

from chatbot.conversations.services.desk import conversations_resolve_idle
from chatbot.conversations.services.generations import generation_requeue_orphans
from chatbot.queues import COMPARE_QUEUE, generation_queue
from chatbot.serving.heartbeats import WorkerStatus, heartbeat_delete, heartbeat_write
from chatbot.serving.models import ServingState
from chatbot.serving.selectors import rollout_guard_alert
from chatbot.serving.services import comparison_fail_orphans, rollout_guard_check
from inference_worker import metrics
from inference_worker.cancellations import CancelWatcher
from inference_worker.engine.engine import BatchingEngine
from inference_worker.engine.pump import StreamPump
from inference_worker.engine_factory import EngineSpec, build_engine
from inference_worker.engine_process import RemoteEngine
from inference_worker.model_loading import ModelLoadError, check_model_folder, is_local
from inference_worker.publisher import EventPublisher
from inference_worker.torch_threads import torch_work_threads

# How often the worker reads its running generations' cancellation flags (one MGET for all).
CANCEL_CHECK_S = 0.25

logger = logging.getLogger(__name__)


class VariantSlot:
    """One variant on this worker: its state, and once loaded its model and engine."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.config = settings.MODEL_VARIANTS[variant]
        self.state = "standby"  # standby (checked, loads on first use) | loading | ready | failed
        self.detail = ""
        self.since = time.time()  # when the state last became "loading"
        self.engine: BatchingEngine | RemoteEngine | None = None
        self.lock = threading.Lock()

    def check(self) -> None:
        if is_local(self.config["path"]):
            check_model_folder(self.config["path"], quantized=self.config["quantized"])

    def load(self) -> BatchingEngine | RemoteEngine:
        """Load and start the engine once; later calls return it (a new one if the engine's
        process has died). Raises ModelLoadError."""
        with self.lock:
            if self.engine is not None and not self.engine.exited:
                return self.engine
            self.state, self.detail, self.since = "loading", "", time.time()
            spec = engine_spec(self.variant)
            try:
                if settings.ENGINE_PROCESS:
                    engine = RemoteEngine(spec).start()
                else:
                    _, engine = build_engine(spec)
            except ModelLoadError as exc:
                self.state, self.detail = "failed", str(exc)
                raise
            except Exception as exc:  # noqa: BLE001 - no process to start, no memory, ...: never left "loading"
                error = ModelLoadError(self.config["path"], f"starting its engine failed: {type(exc).__name__}: {exc}")
                self.state, self.detail = "failed", str(error)
                raise error from exc
            self.engine = engine
            self.state = "ready"
            return engine


def engine_spec(variant: str) -> EngineSpec:
    """A variant's engine as the settings describe it."""
    config = settings.MODEL_VARIANTS[variant]
    return EngineSpec(
        variant=variant,
        path=config["path"],
        quantized=config["quantized"],
        device=settings.MODEL_DEVICE,
        gptq_cpu_dtype=settings.GPTQ_CPU_DTYPE,
        gptq_cuda_kernel=settings.GPTQ_CUDA_KERNEL,
        cudnn_attention=settings.CUDA_SDPA_CUDNN,
        load_threads=torch_work_threads(),
        max_batch=settings.ENGINE_MAX_BATCH,
        max_new_tokens=settings.MAX_NEW_TOKENS,
        context_tokens=settings.CONTEXT_BUDGET_TOKENS + settings.MAX_NEW_TOKENS,
        backend=settings.ENGINE_BACKEND,
        loop_threads=settings.ENGINE_LOOP_THREADS,
        prefill_wait_s=settings.ENGINE_PREFILL_WAIT_MS / 1000,
        cuda_graphs=settings.ENGINE_CUDA_GRAPHS,
        temperature=config.get("temperature", settings.GENERATION_TEMPERATURE),
        top_p=config.get("top_p", settings.GENERATION_TOP_P),
        log_level=settings.ENGINE_LOG_LEVEL,
    )


class WorkerRuntime:
    def __init__(
        self, *, name: str | None = None, variants: list[str] | None = None, preload: str | None = None
    ) -> None:
        self.name = name or f"{socket.gethostname()}.{id(self) & 0xFFFF:x}"
        variants = variants or settings.WORKER_VARIANTS
        unknown = [v for v in variants if v not in settings.MODEL_VARIANTS]
        if unknown:
            raise ValueError(
                f"WORKER_VARIANTS names unknown variants {unknown}; known: {sorted(settings.MODEL_VARIANTS)}"
            )
        self.slots = {variant: VariantSlot(variant) for variant in variants}
        self.preload = preload or settings.WORKER_PRELOAD
        self.publisher: EventPublisher | None = None
        self.pump: StreamPump | None = None
        self.cancels: CancelWatcher | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._last_tokens: dict[str, tuple[float, int]] = {}
        self._guard_due = 0.0  # time.monotonic() of the next rollout guard check

    @property
    def queues(self) -> list[str]:
        queues = [generation_queue(variant) for variant in self.slots]
        if set(settings.MODEL_VARIANTS) <= set(self.slots):
            queues.append(COMPARE_QUEUE)  # only a worker with both variants can compare them
        return queues

    def start(self) -> WorkerRuntime:
        """Check every variant's files, load those to preload, start publishing and heartbeats.
        Raises ModelLoadError (naming the path and the fault) before serving anything."""
        for slot in self.slots.values():
            slot.check()
        to_load = (
            list(self.slots)
            if self.preload == "all"
            else [v for v in self.slots if v == settings.DEFAULT_MODEL_VARIANT]
        )
        self._load(to_load)
        self.publisher = EventPublisher()
        self.pump = StreamPump(interval_s=settings.STREAM_FLUSH_INTERVAL_S, around_pass=self.publisher.batch)
        self.cancels = CancelWatcher(interval_s=CANCEL_CHECK_S)
        self.beat()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._heartbeat.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="orphan-sweep", daemon=True)
        self._sweeper.start()
        metrics.serve(settings.METRICS_PORT)
        return self

    def _load(self, variants: list[str]) -> None:
        """Load these variants' engines. Engine processes start side by side (each imports torch
        and loads its model, seconds apart, on a core of its own); the first variant's error is
        raised once every load has ended, so no child is left starting behind it."""
        if not settings.ENGINE_PROCESS or len(variants) < 2:
            for variant in variants:
                self.slots[variant].load()
            return
        with ThreadPoolExecutor(max_workers=len(variants), thread_name_prefix="load") as pool:
            loads = [pool.submit(self.slots[variant].load) for variant in variants]
        for load in loads:  # every load has ended here (the pool's exit waited for them)
            load.result()

    def engine_for(self, variant: str) -> BatchingEngine | RemoteEngine:
        slot = self.slots.get(variant)
        if slot is None:
            raise ModelLoadError(variant, "this worker does not serve that variant")
        return slot.load()

    def status(self) -> WorkerStatus:
        variants = {v: {"state": s.state, "detail": s.detail, "since": s.since} for v, s in self.slots.items()}
        engines = [s.engine for s in self.slots.values() if s.engine is not None]
        return WorkerStatus(
            name=self.name,
            variants=variants,
            running=sum(e.active_count for e in engines),
            waiting=sum(e.waiting_count for e in engines),
            reported_at=time.time(),
        )

    def beat(self) -> None:
        try:
            heartbeat_write(self.status())
        except Exception:  # noqa: BLE001 - Redis away: the web will see this worker as gone
            logger.warning("heartbeat failed", exc_info=True)
        now = time.monotonic()
        for variant, slot in self.slots.items():
            engine = slot.engine
            if engine is None:
                continue
            metrics.RUNNING.labels(variant).set(engine.active_count)
            metrics.WAITING.labels(variant).set(engine.waiting_count)
            before = self._last_tokens.get(variant)
            if before is not None and now > before[0]:
                metrics.TOKENS_PER_S.labels(variant).set((engine.tokens_generated - before[1]) / (now - before[0]))
            self._last_tokens[variant] = (now, engine.tokens_generated)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(settings.WORKER_HEARTBEAT_S):
            self.beat()

    def _sweep_loop(self) -> None:
        # A thread of its own: a sweep that waits on the database (a lock, a slow query) must
        # never hold back the heartbeat, or the web would take this live worker for gone.
        while not self._stop.wait(settings.WORKER_HEARTBEAT_S):
            try:
                # Answers and comparisons whose worker stopped beating mid-way; conversations
                # whose customer went quiet after the bot's answer.
                generation_requeue_orphans(alive=[self.name])
                comparison_fail_orphans(alive=[self.name])
                conversations_resolve_idle()
            except Exception:  # noqa: BLE001
                logger.warning("orphan sweep failed", exc_info=True)
            try:
                self.guard()
            except Exception:  # noqa: BLE001
                logger.warning("rollout guard check failed", exc_info=True)
            finally:
                # Back to the pool between sweeps; a connection broken by a database restart is
                # dropped here instead of failing every sweep after it.
                db.close_old_connections()

    def guard(self, *, now: float | None = None) -> None:
        """The rollout guard, every ROLLOUT_GUARD_INTERVAL_S from the sweep thread: it runs where
        the product already runs (every worker; the database lock lets one act), with no
        scheduler of its own. Its Prometheus gauges follow the database."""
        now = time.monotonic() if now is None else now
        if now < self._guard_due:
            return
        self._guard_due = now + settings.ROLLOUT_GUARD_INTERVAL_S
        change = rollout_guard_check()
        if change is not None:
            metrics.GUARD_ROLLBACKS.labels(change.to_variant).inc()
        state = ServingState.objects.filter(pk=1).first()
        metrics.GUARD_ENABLED.set(1 if state is None or state.guard_enabled else 0)
        metrics.CANDIDATE_SHARE.set(state.candidate_percent if state is not None and state.rollout_id else 0)
        metrics.GUARD_TRIPPED.set(1 if rollout_guard_alert() is not None else 0)

    def stop(self) -> None:
        self._stop.set()
        try:
            heartbeat_delete(self.name)
        except Exception:  # noqa: BLE001
            pass
        for slot in self.slots.values():
            if slot.engine is not None:
                slot.engine.stop()
        if self.pump is not None:
            self.pump.stop()
        if self.cancels is not None:
            self.cancels.stop()
        if self.publisher is not None:
            self.publisher.close()


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def set_runtime(runtime: WorkerRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> WorkerRuntime:
    """The process's runtime; started on first use when the worker was not started by
    `manage.py run_worker` (which starts it before taking tasks)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime().start()
        return _runtime
