"""One generation, from its claim to its stored answer: the flow behind the `generate` task.

Many of these run at once in one worker process (Celery's threads pool); each submits its request
to the engine of its variant, and the worker's one stream pump streams it (`streaming.py`). The
flow takes only the Generation id and re-reads the world; the claim makes it idempotent, so
`acks_late` and redelivery are safe.
"""

from __future__ import annotations

import logging
import time

from django import db
from django.conf import settings

from chatbot.conversations import protocol, selectors
from chatbot.conversations.models import Conversation, Generation
from chatbot.conversations.services import desk, generations
from chatbot.desk.presence import staff_watch_key
from chatbot.knowledge.text import strip_citations
from inference_worker import metrics
from inference_worker.engine.dense import reasoning_markers
from inference_worker.engine.pump import wait_for
from inference_worker.engine.stream import IncrementalDecoder
from inference_worker.engine.types import Engine, RequestHandle
from inference_worker.grounding import (
    NOT_FOUND_REASON,
    check_support,
    ground_turns,
    knowledge_search,
    prompt_tokens,
)
from inference_worker.handoff import HANDOFF_OPEN, HandoffAction, parse_handoff
from inference_worker.model_loading import ModelLoadError
from inference_worker.prompting import build_prompt_ids, prompt_budget
from inference_worker.runtime import WorkerRuntime
from inference_worker.streaming import AnswerStream, GenerationSink

logger = logging.getLogger(__name__)

# How often a task thread waiting for its answer checks the generation's time limit.
TIME_LIMIT_CHECK_S = 1.0
EMPTY_ANSWER_TEXT = "Sorry, I don't have an answer to that. Could you rephrase, or ask to talk to a person?"
# Shown when the new-token allowance ran out (or the model stopped) inside the reasoning, before
# any answer: the conversation goes to a person at once.
NO_ANSWER_IN_TIME_TEXT = (
    "Sorry, I couldn't work out an answer to that in time. I'm passing you to a colleague from our team; "
    "they will answer you here."
)
# Shown when the model handed off without writing an answer before its action.
HANDED_OVER_TEXT = "I'm passing you to a colleague from our team; they will answer you here."


def run_generation(*, generation_id: int, runtime: WorkerRuntime) -> str:
    generation = generations.generation_claim(generation_id=generation_id, worker=runtime.name)
    if generation is None:
        return "skipped"
    conversation = generation.conversation
    variant = generation.model_variant
    suggestion = generation.kind == Generation.Kind.SUGGESTION
    stream = AnswerStream(
        publisher=runtime.publisher,
        group=conversation.group_name,
        staff_group=conversation.staff_group_name,
        generation_id=generation.pk,
        attempt=generation.attempts,
        interval_s=settings.STREAM_FLUSH_INTERVAL_S,
        suggestion=suggestion,
    )

    def fail(error: str) -> str:
        # The failure's word (and, for an answer, the handoff to a person that follows it) leaves
        # after the commit, in that order.
        generations.generation_fail(generation=generation, error=error, attempt=stream.attempt)
        metrics.GENERATIONS.labels(variant, "failed").inc()
        return "failed"

    def give_back(engine: Engine) -> str | None:
        """An engine process that died took this answer with it, not because of the answer: the
        generation goes back to the queue (the next attempt gets a new engine process, here or
        in another worker) until it is out of attempts. None when the engine did not die."""
        if not engine.exited:
            return None
        lost = f"the engine process of worker {runtime.name}"
        outcome = generations.generation_requeue(generation_id=generation.pk, worker=runtime.name, lost=lost)
        if outcome is None:
            return "skipped"  # ended meanwhile (a cancel, say): nothing to give back
        metrics.GENERATIONS.labels(variant, outcome).inc()
        return outcome

    def unloadable(exc: ModelLoadError) -> str:
        logger.error("generation %s: %s", generation.pk, exc)
        return fail(str(exc))

    try:
        engine = runtime.engine_for(variant)
    except ModelLoadError as exc:
        return unloadable(exc)

    stream.send(protocol.generation_started(generation_id=generation.pk, model_variant=variant, attempt=stream.attempt))
    tokenizer = engine.tokenizer
    budget_tokens = prompt_budget(
        tokenizer, context_budget=settings.CONTEXT_BUDGET_TOKENS, max_new_tokens=settings.MAX_NEW_TOKENS
    )
    # The knowledge base's passages for the customer's latest message join that turn.
    turns, grounding = ground_turns(
        turns=selectors.prompt_turns(generation=generation),
        tokenizer=tokenizer,
        budget_tokens=budget_tokens,
        instruction=settings.KNOWLEDGE_INSTRUCTION,
        search=knowledge_search(),
    )
    try:
        prompt_ids = build_prompt_ids(
            tokenizer=tokenizer,
            turns=turns,
            budget_tokens=prompt_tokens(budget_tokens, grounding.extra_tokens if grounding else 0),
            system_prompt=settings.SYSTEM_PROMPT,
        )
    except ValueError as exc:
        return fail(f"prompt: {exc}")

    budget = reasoning_budget(conversation=conversation, variant=variant)
    created = generation.created_at.timestamp()
    stops = [t for t in (tokenizer.eos_token, tokenizer.pad_token) if t]
    sink = GenerationSink(
        stream=stream,
        decoder=IncrementalDecoder(
            lambda ids: tokenizer.decode(ids, skip_special_tokens=False), stop_strings=stops, hide_from=(HANDOFF_OPEN,)
        ),
    )
    deadline = time.monotonic() + settings.GENERATION_TIMEOUT_S
    timed_out = False
    # An engine process found dead before this answer started in it (it died between the
    # worker's last look and the submit, or with the answer still in its queue) did not die of
    # this answer: the answer goes to a new engine process at once, within this attempt. Once:
    # an answer that kills its engine before the worker hears that it started would otherwise
    # go round for ever.
    fresh_engines = 1
    while True:
        refused: RuntimeError | None = None
        try:
            # In the engine's queue the answer's place is by the message's arrival (`created`):
            # task threads reach the engine in either order, and a rerun keeps its place in line.
            watch = runtime.pump.submit(
                engine,
                prompt_ids,
                sink=sink,
                request_id=f"g{generation.pk}.{generation.attempts}",
                arrival=created,
                reasoning_budget=budget,
            )
        except RuntimeError as exc:  # the engine stopped since `engine_for` (its process died, say)
            refused = exc
        else:
            handle = watch.handle
            # The customer's stop, a new message or an agent taking over raise the generation's
            # cancellation flag; the runtime's one watcher reads every running generation's flag.
            runtime.cancels.watch(
                generation.pk,
                handle,
                staff_key=None if suggestion else staff_watch_key(conversation.public_id),
                on_staff=stream.set_staff_watching,
            )

            def check(handle: RequestHandle = handle) -> None:
                nonlocal timed_out
                if time.monotonic() > deadline and not timed_out:
                    timed_out = True
                    handle.cancel()

            # The answer takes seconds: the database connection goes back (to the pool)
            # meanwhile, so that a worker with WORKER_CONCURRENCY tasks in flight does not hold
            # as many connections.
            db.connection.close()
            try:
                outcome = wait_for(watch, every_s=TIME_LIMIT_CHECK_S, check=check)
            finally:
                runtime.cancels.unwatch(generation.pk, handle)
        unstarted = refused is not None or (
            outcome.kind == "failed" and not timed_out and handle.admitted_at is None and not handle.generated
        )
        if not (engine.exited and unstarted and fresh_engines):
            break
        fresh_engines -= 1
        logger.warning(
            "generation %s: the engine process of %s was gone before the answer started; on a new one",
            generation.pk,
            variant,
        )
        try:
            engine = runtime.engine_for(variant)
        except ModelLoadError as exc:
            return unloadable(exc)

    if refused is not None:
        return give_back(engine) or fail(f"engine: {refused}")
    if timed_out:
        return fail(f"timed out after {settings.GENERATION_TIMEOUT_S} s")
    if outcome.kind == "failed":
        return give_back(engine) or fail(f"engine: {outcome.error}")
    if outcome.kind == "cancelled":
        metrics.GENERATIONS.labels(variant, "cancelled").inc()
        return "cancelled"

    result = sink.decoder.result()
    if suggestion:
        # An agent sends a suggestion in their own name: without the bot's [n] markers.
        text = strip_citations(result.answer) if grounding else result.answer
        return _suggestion_done(generation=generation, text=text, stream=stream, variant=variant)

    finished_wall = time.time()
    generated = len(handle.generated)
    think_close = tokenizer.convert_tokens_to_ids("</think>")
    reasoning_tokens = handle.generated.index(think_close) if think_close in handle.generated else generated
    markers = reasoning_markers(tokenizer)
    cut = markers is not None and markers.cut_at_budget(handle.generated, budget)
    if cut:
        reasoning_tokens = budget
    # The model's own handoff action (a block after the answer, never shown): the conversation
    # goes to a person once the customer has the answer. Only the block hands off, never words.
    action = parse_handoff(result.hidden)
    answer, check = result.answer, ""
    if grounding is not None and answer and settings.KNOWLEDGE_ANSWER_CHECK:
        # What the answer says about the store must be what its passages say (grounding.py).
        checked = check_support(answer, grounding.passages, min_support=settings.KNOWLEDGE_MIN_SUPPORT)
        answer, check = checked.text, checked.outcome
        if checked.handoff and action is None:
            action = HandoffAction(reason=NOT_FOUND_REASON, well_formed=True)
    first_token_wall = sink.first_token_wall or finished_wall
    decode_s = finished_wall - first_token_wall
    measures = {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": generated,
        "reasoning_tokens": reasoning_tokens,
        "queue_wait_ms": ((sink.admitted_wall or finished_wall) - created) * 1000,
        "time_to_first_token_ms": (first_token_wall - created) * 1000,
        "engine_time_to_first_token_ms": (handle.time_to_first_token_s or 0.0) * 1000,
        "time_to_first_answer_token_ms": (sink.first_answer_wall - created) * 1000 if result.answer else None,
        "reasoning_cut": cut,
        "latency_ms": (finished_wall - created) * 1000,
        "tokens_per_s": (generated - 1) / decode_s if generated > 1 and decode_s > 0 else None,
        # The passages it was given and which it cites: its sources, shown as links.
        "passages": grounding.snapshots(answer) if grounding else [],
        "answer_check": check,
    }
    # The allowance ended inside the reasoning: never an empty answer, and a person takes over.
    unfinished = result.in_reasoning
    if answer:
        text = answer
    elif action:
        text = HANDED_OVER_TEXT
    else:
        text = NO_ANSWER_IN_TIME_TEXT if unfinished else EMPTY_ANSWER_TEXT
    message = generations.generation_complete(
        generation_id=generation.pk,
        text=text,
        reasoning=result.reasoning,
        measures=measures,
        no_answer=not result.answer and action is None,
    )
    if message is None:
        metrics.GENERATIONS.labels(variant, "cancelled").inc()
        return "cancelled"
    done = stream.send(protocol.answer_done(message=message, attempt=stream.attempt))
    if stream.staff_watching:
        stream.publisher.publish(conversation.staff_group_name, protocol.staff_message_new(message=message))
    if action is not None or unfinished or message.no_answer:
        # Any handoff waits until the customer has the answer (its events must not overtake it).
        if done is not None:
            done.result(timeout=5)
        if action is not None:
            desk.conversation_handoff(
                conversation=message.conversation, reason=Conversation.HandoffReason.BOT_HANDOFF, detail=action.detail
            )
        elif unfinished:
            desk.conversation_handoff(
                conversation=message.conversation,
                reason=Conversation.HandoffReason.NO_ANSWER_IN_TIME,
                detail=f"the reasoning was still going after {generated} tokens",
            )
        else:
            # A second answer in a row with nothing to say hands the conversation to a person.
            desk.conversation_handoff_if_no_answer_twice(conversation=message.conversation)
    metrics.TOKENS.labels(variant).inc(generated)
    metrics.TTFT.labels(variant).observe(measures["time_to_first_token_ms"] / 1000)
    if measures["time_to_first_answer_token_ms"] is not None:
        metrics.TIME_TO_ANSWER.labels(variant).observe(measures["time_to_first_answer_token_ms"] / 1000)
    if cut:
        metrics.REASONING_CUT.labels(variant).inc()
    metrics.QUEUE_WAIT.labels(variant).observe(measures["queue_wait_ms"] / 1000)
    metrics.GENERATIONS.labels(variant, "done").inc()
    logger.info(
        "generation %s done: %s tokens, ttft %.0f ms", generation.pk, generated, measures["time_to_first_token_ms"]
    )
    return "done"


def reasoning_budget(*, conversation: Conversation, variant: str) -> int | None:
    """Tokens the answer may reason for before the engine closes it: the conversation's own (a
    staff test's), else its variant's, else REASONING_BUDGET_TOKENS (None: no budget)."""
    if conversation.reasoning_budget_tokens is not None:
        return conversation.reasoning_budget_tokens
    return settings.MODEL_VARIANTS.get(variant, {}).get("reasoning_budget_tokens", settings.REASONING_BUDGET_TOKENS)


def _suggestion_done(*, generation: Generation, text: str, stream: AnswerStream, variant: str) -> str:
    """A suggested reply is kept on its generation and handed to the staff watching; the agent
    edits and sends it, or not."""
    done = generations.generation_suggestion_complete(generation_id=generation.pk, text=text)
    if done is None:
        metrics.GENERATIONS.labels(variant, "cancelled").inc()
        return "cancelled"
    stream.publisher.publish(stream.staff_group, protocol.suggestion_done(generation_id=generation.pk, text=text))
    metrics.GENERATIONS.labels(variant, "done").inc()
    return "done"
