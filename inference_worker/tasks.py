"""The Celery task of the GPU worker: one generation, streamed to the conversation's sockets.

Many of these run at once in one worker process (threads pool); each submits its request to the
process-wide engine of its variant and consumes that request's stream. The task takes only the
Generation id, re-reads the world, and is idempotent (`generation_claim`), so `acks_late` and
redelivery are safe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django import db
from django.conf import settings
from django.utils import timezone

from chatbot.celery import app
from chatbot.conversations import selectors, services
from inference_worker import metrics
from inference_worker.engine.engine import EngineEvent
from inference_worker.engine.pump import wait_for
from inference_worker.engine.stream import IncrementalDecoder
from inference_worker.model_loading import ModelLoadError
from inference_worker.prompting import build_prompt_ids
from inference_worker.runtime import WorkerRuntime, get_runtime

logger = logging.getLogger(__name__)

# How often a task thread waiting for its answer checks the generation's time limit.
TIME_LIMIT_CHECK_S = 1.0
EMPTY_ANSWER_TEXT = "Sorry, I don't have an answer to that. Could you rephrase, or ask to talk to a person?"


@app.task(name=services.GENERATE_TASK, bind=True, acks_late=True, ignore_result=True)
def generate(self, generation_id: int) -> str:
    return run_generation(generation_id=generation_id, runtime=get_runtime())


@dataclass
class _Stream:
    """Coalesces deltas: one event per flush interval instead of one per token. Every event
    carries the generation's attempt, so that a page drops what a lost attempt streamed."""

    runtime: WorkerRuntime
    group: str
    staff_group: str
    generation_id: int
    attempt: int
    interval_s: float
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    last_flush: float = 0.0
    thinking_sent: bool = False

    def add(self, reasoning: str, answer: str) -> None:
        if reasoning:
            self.reasoning.append(reasoning)
        if answer:
            self.answer.append(answer)

    def send(self, event: dict) -> None:
        self.runtime.publisher.publish(
            self.group, {"generation_id": self.generation_id, "attempt": self.attempt, **event}
        )

    def maybe_flush(self, *, force: bool = False) -> None:
        if not self.reasoning and not self.answer:
            return  # nothing to send: the next piece goes out as soon as it comes
        now = time.monotonic()
        if not force and now - self.last_flush < self.interval_s:
            return
        self.last_flush = now
        if self.reasoning:
            if not self.thinking_sent and not self.answer:
                self.send({"type": "answer.thinking"})
                self.thinking_sent = True
            self.runtime.publisher.publish(
                self.staff_group,
                {
                    "type": "reasoning.delta",
                    "generation_id": self.generation_id,
                    "attempt": self.attempt,
                    "text": "".join(self.reasoning),
                },
            )
            self.reasoning.clear()
        if self.answer:
            self.send({"type": "answer.delta", "text": "".join(self.answer)})
            self.answer.clear()


@dataclass
class _GenerationSink:
    """Where the stream pump hands this generation's progress (on the pump's thread)."""

    stream: _Stream
    decoder: IncrementalDecoder
    first_token_wall: float | None = None
    admitted_wall: float | None = None

    def on_event(self, event: EngineEvent) -> None:
        if event.kind == "queued":
            self.stream.send({"type": "generation.queued", "position": event.position})
        elif event.kind == "started":
            self.admitted_wall = time.time()

    def on_tokens(self, tokens: tuple[int, ...], *, final: bool) -> None:
        if self.first_token_wall is None and tokens:
            self.first_token_wall = time.time()
        self.stream.add(*self.decoder.update(tokens, final=final))
        if final:
            self.stream.maybe_flush(force=True)

    def flush(self) -> None:
        self.stream.maybe_flush()


def run_generation(*, generation_id: int, runtime: WorkerRuntime) -> str:
    generation = services.generation_claim(generation_id=generation_id, worker=runtime.name)
    if generation is None:
        return "skipped"
    conversation = generation.conversation
    variant = generation.model_variant
    stream = _Stream(
        runtime=runtime,
        group=conversation.group_name,
        staff_group=conversation.staff_group_name,
        generation_id=generation.pk,
        attempt=generation.attempts,
        interval_s=settings.STREAM_FLUSH_INTERVAL_S,
    )

    def fail(error: str) -> str:
        if services.generation_fail(generation=generation, error=error, notify=False):
            stream.send({"type": "generation.failed", "detail": services.FAILED_DETAIL})
        metrics.GENERATIONS.labels(variant, "failed").inc()
        return "failed"

    def give_back(engine) -> str | None:
        """An engine process that died took this answer with it, not because of the answer: the
        generation goes back to the queue (the next attempt gets a new engine process, here or
        in another worker) until it is out of attempts. None when the engine did not die."""
        if not engine.exited:
            return None
        lost = f"the engine process of worker {runtime.name}"
        outcome = services.generation_requeue(generation_id=generation.pk, worker=runtime.name, lost=lost)
        if outcome is None:
            return "skipped"  # ended meanwhile (a cancel, say): nothing to give back
        metrics.GENERATIONS.labels(variant, outcome).inc()
        return outcome

    try:
        engine = runtime.engine_for(variant)
    except ModelLoadError as exc:
        logger.error("generation %s: %s", generation.pk, exc)
        return fail(str(exc))

    stream.send({"type": "generation.started", "model_variant": variant})
    tokenizer = engine.tokenizer
    try:
        prompt_ids = build_prompt_ids(
            tokenizer=tokenizer,
            turns=selectors.prompt_turns(generation=generation),
            budget_tokens=settings.CONTEXT_BUDGET_TOKENS,
            system_prompt=settings.SYSTEM_PROMPT,
        )
    except ValueError as exc:
        return fail(f"prompt: {exc}")

    created = generation.created_at.timestamp()
    stops = [t for t in (tokenizer.eos_token, tokenizer.pad_token) if t]
    sink = _GenerationSink(
        stream=stream,
        decoder=IncrementalDecoder(lambda ids: tokenizer.decode(ids, skip_special_tokens=False), stop_strings=stops),
    )
    try:
        # In the engine's queue the answer's place is by the message's arrival (`created`): task
        # threads reach the engine in either order, and a rerun keeps its place in line.
        watch = runtime.pump.submit(
            engine, prompt_ids, sink=sink, request_id=f"g{generation.pk}.{generation.attempts}", arrival=created
        )
    except RuntimeError as exc:  # the engine stopped since `engine_for` (its process died, say)
        return give_back(engine) or fail(f"engine: {exc}")
    handle = watch.handle
    # The customer's stop, a new message or an agent taking over raise the generation's
    # cancellation flag; the runtime's one watcher reads every running generation's flag.
    runtime.cancels.watch(generation.pk, handle)
    deadline = time.monotonic() + settings.GENERATION_TIMEOUT_S
    timed_out = False

    def check() -> None:
        nonlocal timed_out
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            handle.cancel()

    # The answer takes seconds: the database connection goes back (to the pool) meanwhile, so
    # that a worker with WORKER_CONCURRENCY tasks in flight does not hold as many connections.
    db.connection.close()
    try:
        outcome = wait_for(watch, every_s=TIME_LIMIT_CHECK_S, check=check)
    finally:
        runtime.cancels.unwatch(generation.pk, handle)
    decoder, first_token_wall, admitted_wall = sink.decoder, sink.first_token_wall, sink.admitted_wall

    if timed_out:
        return fail(f"timed out after {settings.GENERATION_TIMEOUT_S} s")
    if outcome.kind == "failed":
        return give_back(engine) or fail(f"engine: {outcome.error}")
    if outcome.kind == "cancelled":
        metrics.GENERATIONS.labels(variant, "cancelled").inc()
        return "cancelled"

    finished_wall = time.time()
    result = decoder.result()
    generated = len(handle.generated)
    think_close = tokenizer.convert_tokens_to_ids("</think>")
    reasoning_tokens = handle.generated.index(think_close) if think_close in handle.generated else generated
    decode_s = finished_wall - (first_token_wall or finished_wall)
    measures = {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": generated,
        "reasoning_tokens": reasoning_tokens,
        "queue_wait_ms": ((admitted_wall or finished_wall) - created) * 1000,
        "time_to_first_token_ms": ((first_token_wall or finished_wall) - created) * 1000,
        "engine_time_to_first_token_ms": (handle.time_to_first_token_s or 0.0) * 1000,
        "latency_ms": (finished_wall - created) * 1000,
        "tokens_per_s": (generated - 1) / decode_s if generated > 1 and decode_s > 0 else None,
    }
    message = services.generation_complete(
        generation_id=generation.pk,
        text=result.answer or EMPTY_ANSWER_TEXT,
        reasoning=result.reasoning,
        measures=measures,
    )
    if message is None:
        metrics.GENERATIONS.labels(variant, "cancelled").inc()
        return "cancelled"
    stream.send(services.answer_done_event(message=message))
    metrics.TOKENS.labels(variant).inc(generated)
    metrics.TTFT.labels(variant).observe(measures["time_to_first_token_ms"] / 1000)
    metrics.QUEUE_WAIT.labels(variant).observe(measures["queue_wait_ms"] / 1000)
    metrics.GENERATIONS.labels(variant, "done").inc()
    logger.info(
        "generation %s done: %s tokens, ttft %.0f ms, %s",
        generation.pk,
        generated,
        measures["time_to_first_token_ms"],
        timezone.now().isoformat(),
    )
    return "done"


@app.task(name="inference_worker.compare_variants", bind=True, acks_late=True, ignore_result=True)
def compare_variants(self, comparison_id: int) -> str:
    """Run the FP16-vs-4-bit comparison (held-out questions and recent customer questions) and
    store its result on the VariantComparison row. Loads its own copies of both variants: the
    serving engines' models are busy in their batches."""
    from chatbot.serving.models import VariantComparison
    from inference_worker.demo_model.evaluate import evaluate_models
    from inference_worker.torch_threads import on_own_thread, torch_work_threads

    updated = VariantComparison.objects.filter(pk=comparison_id, status=VariantComparison.Status.PENDING).update(
        status=VariantComparison.Status.RUNNING
    )
    if not updated:
        return "skipped"
    try:
        extra_prompts = selectors.recent_customer_prompts(limit=settings.COMPARE_RECENT_QUESTIONS)
        result = on_own_thread(
            lambda: evaluate_models(
                fp16_path=settings.MODEL_VARIANTS["fp16"]["path"],
                gptq_path=settings.MODEL_VARIANTS["gptq-int4"]["path"],
                extra_prompts=extra_prompts,
            ),
            threads=torch_work_threads(),
            name="compare-variants",
        )
    except Exception as exc:  # noqa: BLE001 - stored for the admin to read
        logger.exception("comparison %s failed", comparison_id)
        VariantComparison.objects.filter(pk=comparison_id).update(
            status=VariantComparison.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        return "failed"
    VariantComparison.objects.filter(pk=comparison_id).update(
        status=VariantComparison.Status.DONE, result=result, finished_at=timezone.now()
    )
    return "done"
