"""A generation's life: enqueued after the customer's message commits, claimed and completed by
a worker, cancelled (a new message, the stop button, an agent taking over), failed, or given back
to the queue when the worker or engine process running it died. The worker's task calls the
claim, complete and requeue services; the web calls the others."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chatbot.conversations import limits, protocol
from chatbot.conversations.models import Conversation, Generation, Message
from chatbot.events import send_event_on_commit
from chatbot.queues import GENERATE_TASK, generation_queue
from chatbot.redis_client import CANCEL_TTL_S, cancel_key, get_redis
from chatbot.serving.selectors import variant_is_served, worker_status_list
from chatbot.sql import column, columns, placeholders, table

logger = logging.getLogger(__name__)

FAILED_DETAIL = "Sorry, the assistant could not answer this message. Your message is saved; please try again."
SUGGESTION_FAILED_DETAIL = "No suggestion could be drafted right now."


def generation_enqueue(*, generation: Generation, notify_failure: bool = False) -> bool:
    """Send the generation to its variant's queue. If no live worker serves the variant, or the
    broker cannot be reached, the generation is marked FAILED (the customer's message stays).
    The customer's own socket reports that itself; `notify_failure` tells the conversation's
    sockets through the group instead (for generations enqueued away from a socket)."""
    from chatbot.celery import app

    try:
        if not variant_is_served(variant=generation.model_variant):
            generation_fail(
                generation=generation, error="no live worker serves this model variant", notify=notify_failure
            )
            return False
        app.send_task(
            GENERATE_TASK,
            args=[generation.pk],
            queue=generation_queue(generation.model_variant),
            retry=False,
            ignore_result=True,
        )
    except Exception as exc:  # noqa: BLE001 - Redis down shows up as several exception types
        logger.warning("could not enqueue generation %s: %s", generation.pk, exc)
        generation_fail(generation=generation, error=f"broker unreachable: {type(exc).__name__}", notify=notify_failure)
        return False
    return True


def _generation_end(*, generation: Generation, status: str, error: str) -> bool:
    """Move a pending or running generation to a final status. Returns False (and changes
    nothing) when it had already ended: the UPDATE's condition decides, so racing writers agree."""
    now = timezone.now()
    updated = Generation.objects.filter(pk=generation.pk, status__in=Generation.OPEN_STATUSES).update(
        status=status, error=error[:2000], finished_at=now
    )
    if updated:
        generation.status, generation.error, generation.finished_at = status, error, now
    return bool(updated)


def _answer_ended_on_commit(generation: Generation) -> None:
    """A customer's answer ended: once committed, it no longer counts among the visitor's open
    answers (`limits`)."""
    if generation.kind != Generation.Kind.ANSWER:
        return
    conversation = generation.conversation
    transaction.on_commit(
        lambda: limits.visitor_answer_end(
            visitor_id=conversation.visitor_id,
            conversation_public_id=conversation.public_id,
            generation_id=generation.pk,
        )
    )


def generation_cancel(*, generation: Generation, reason: str, replaced: bool = False) -> bool:
    """Mark a pending or running generation CANCELLED and tell its worker (a Redis flag the
    worker polls) and the customer. Returns False when it had already ended. `replaced`: a new
    answer in the same conversation takes its place among the visitor's open answers (counted
    by `limits.visitor_message_admit`), so nothing is released here."""
    if not _generation_end(generation=generation, status=Generation.Status.CANCELLED, error=reason):
        return False
    if not replaced:
        _answer_ended_on_commit(generation)

    def flag() -> None:
        try:
            get_redis().set(cancel_key(generation.pk), "1", ex=CANCEL_TTL_S)
        except Exception:  # noqa: BLE001 - the worker also re-reads the row before it writes
            logger.warning("could not flag generation %s as cancelled", generation.pk, exc_info=True)

    transaction.on_commit(flag)
    if generation.kind == Generation.Kind.ANSWER:  # a discarded suggestion needs no word
        send_event_on_commit(
            generation.conversation.group_name, protocol.generation_cancelled(generation_id=generation.pk)
        )
    return True


def conversation_cancel_answers(*, conversation: Conversation, reason: str, replaced: bool = False) -> None:
    """Cancel every bot answer of the conversation that is still pending or running (an agent's
    suggestion runs on); `replaced` as in `generation_cancel`."""
    for generation in conversation.generations.filter(status__in=Generation.OPEN_STATUSES, kind=Generation.Kind.ANSWER):
        generation.conversation = conversation
        generation_cancel(generation=generation, reason=reason, replaced=replaced)


def generation_fail(*, generation: Generation, error: str, notify: bool = True, attempt: int | None = None) -> bool:
    """Mark a generation FAILED with its error. An answer that fails for good hands the
    conversation to a person (`desk.conversation_handoff`, after the failure's word, which goes
    to the customer when `notify`); a suggestion's failure is told to the staff who asked."""
    from chatbot.conversations.services.desk import conversation_handoff  # desk builds on this module

    if not _generation_end(generation=generation, status=Generation.Status.FAILED, error=error):
        return False
    _answer_ended_on_commit(generation)
    conversation = generation.conversation
    if generation.kind == Generation.Kind.SUGGESTION:
        send_event_on_commit(
            conversation.staff_group_name,
            protocol.suggestion_failed(generation_id=generation.pk, detail=SUGGESTION_FAILED_DETAIL),
        )
        return True
    if notify:
        send_event_on_commit(
            conversation.group_name,
            protocol.generation_failed(generation_id=generation.pk, detail=FAILED_DETAIL, attempt=attempt),
        )
    conversation_handoff(conversation=conversation, reason=Conversation.HandoffReason.BOT_FAILED, detail=error)
    return True


# -- the worker side: claim, complete, give back -------------------------------------------------


def generation_claim(*, generation_id: int, worker: str) -> Generation | None:
    """Take a generation for running. Idempotent: returns None for an unknown or already ended
    generation (a redelivered task does nothing). A generation whose earlier worker died is run
    again until GENERATION_MAX_ATTEMPTS, then FAILED. Locks the generation row.

    An answer runs only while the bot answers in the conversation (no agent owns it, it is not
    waiting for one); an agent's suggestion runs whoever owns it.

    The claim is on the way to every answer's first token. On PostgreSQL the usual case (still
    open, attempts left, allowed to run) is one statement, `_claim_sql`: the same through the
    ORM cost several times more, most of it compiling four statements. The row lock it takes,
    and PostgreSQL's recheck of its conditions on the row's newest version after waiting for a
    concurrent writer, make racing writers agree as a SELECT ... FOR UPDATE does. Anything else
    goes the ORM's way, which also says why (ended, out of attempts, handed to people)."""
    if connection.vendor == "postgresql":
        claimed = _generation_claim_in_one_statement(generation_id=generation_id, worker=worker)
        if claimed is not None:
            return claimed
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update().select_related("conversation").filter(pk=generation_id).first()
        )
        if generation is None or generation.is_final:
            return None
        if generation.attempts >= settings.GENERATION_MAX_ATTEMPTS:
            generation_fail(generation=generation, error=f"gave up after {generation.attempts} attempts (worker lost)")
            return None
        if generation.kind == Generation.Kind.ANSWER and not generation.conversation.bot_answers:
            generation_cancel(generation=generation, reason="the bot no longer answers in this conversation")
            return None
        generation.attempts += 1
        generation.status = Generation.Status.RUNNING
        generation.started_at = timezone.now()
        generation.worker = worker[:200]
        generation.save(update_fields=["attempts", "status", "started_at", "worker"])
    return generation


@functools.cache
def _claim_sql() -> str:
    """UPDATE ... FROM ... RETURNING (PostgreSQL) that claims a generation when it is still open,
    has attempts left and may run (a suggestion, or an answer in a conversation the bot still
    answers), and returns the generation's and the conversation's columns."""
    status, attempts = column(Generation, "status"), column(Generation, "attempts")
    returning = [f"g.{name}" for name in columns(Generation)] + [f"c.{name}" for name in columns(Conversation)]
    return (
        f"UPDATE {table(Generation)} AS g SET {status} = %s, {attempts} = g.{attempts} + 1, "
        f"{column(Generation, 'started_at')} = %s, {column(Generation, 'worker')} = %s "
        f"FROM {table(Conversation)} AS c "
        f"WHERE g.{column(Generation, 'id')} = %s AND c.{column(Conversation, 'id')} = g.{column(Generation, 'conversation')} "
        f"AND (g.{column(Generation, 'kind')} = %s OR (c.{column(Conversation, 'assigned_agent')} IS NULL "
        f"AND c.{column(Conversation, 'status')} = %s)) "
        f"AND g.{status} IN ({placeholders(Generation.OPEN_STATUSES)}) AND g.{attempts} < %s "
        f"RETURNING {', '.join(returning)}"
    )


def _generation_claim_in_one_statement(*, generation_id: int, worker: str) -> Generation | None:
    """The claim's usual case (see `generation_claim`); None when its conditions do not hold."""
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_sql(),
            [
                Generation.Status.RUNNING.value,
                timezone.now(),
                worker[:200],
                generation_id,
                Generation.Kind.SUGGESTION.value,
                Conversation.Status.BOT.value,
                *(status.value for status in Generation.OPEN_STATUSES),
                settings.GENERATION_MAX_ATTEMPTS,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    generation_fields = Generation._meta.concrete_fields
    split = len(generation_fields)
    generation = Generation.from_db(connection.alias, [f.attname for f in generation_fields], row[:split])
    generation.conversation = Conversation.from_db(
        connection.alias, [f.attname for f in Conversation._meta.concrete_fields], row[split:]
    )
    return generation


def generation_complete(
    *, generation_id: int, text: str, reasoning: str, measures: dict[str, Any], no_answer: bool = False
) -> Message | None:
    """Store the bot's answer and mark the generation DONE. Returns None (and stores nothing)
    when the generation ended meanwhile, or when the bot no longer owns the conversation: the
    owner is checked again here, under the conversation's lock, so an answer that raced an
    agent's takeover can never appear after it. Locks the conversation row, then the
    generation's (the takeover's order)."""
    with transaction.atomic():
        conversation_id = Generation.objects.filter(pk=generation_id).values_list("conversation_id", flat=True).first()
        if conversation_id is None:
            return None
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        generation = Generation.objects.select_for_update().filter(pk=generation_id).first()
        if generation is None or generation.status != Generation.Status.RUNNING:
            return None
        generation.conversation = conversation
        if not conversation.bot_answers:
            _generation_end(
                generation=generation, status=Generation.Status.CANCELLED, error="an agent owns the conversation"
            )
            _answer_ended_on_commit(generation)
            return None
        message = Message.objects.create(
            conversation=conversation,
            author=Message.Author.BOT,
            text=text,
            reasoning=reasoning,
            generation=generation,
            model_variant=generation.model_variant,
            no_answer=no_answer,
            **measures,
        )
        generation.status = Generation.Status.DONE
        generation.finished_at = timezone.now()
        generation.save(update_fields=["status", "finished_at"])
        _answer_ended_on_commit(generation)
        Conversation.objects.filter(pk=conversation.pk).update(
            last_message_at=message.created_at,
            first_response_at=Coalesce(F("first_response_at"), Value(message.created_at)),
        )
    return message


def generation_suggestion_complete(*, generation_id: int, text: str) -> Generation | None:
    """Keep a suggested reply's text on its generation and mark it DONE; None when it ended
    meanwhile (the agent discarded it, or the conversation was resolved)."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .select_related("conversation")
            .filter(pk=generation_id, kind=Generation.Kind.SUGGESTION, status=Generation.Status.RUNNING)
            .first()
        )
        if generation is None:
            return None
        generation.text = text
        generation.status = Generation.Status.DONE
        generation.finished_at = timezone.now()
        generation.save(update_fields=["text", "status", "finished_at"])
    return generation


def generation_requeue_orphans(*, min_age_s: float | None = None, alive: Iterable[str] = ()) -> int:
    """Give generations whose worker died mid-answer to another worker.

    A RUNNING generation whose worker no longer sends heartbeats is set back to PENDING and
    enqueued again (its claim counts the attempt), or FAILED with a word to the customer once it
    has used GENERATION_MAX_ATTEMPTS. Any worker runs this from its heartbeat loop, so a dead
    worker's conversations are picked up within seconds rather than at the broker's visibility
    timeout. The row lock makes two sweeping workers agree. `alive` names workers to count as live
    whatever their heartbeat says (the sweeping worker itself)."""
    min_age_s = settings.WORKER_HEARTBEAT_TTL_S * 2 if min_age_s is None else min_age_s
    live = {worker.name for worker in worker_status_list()} | set(alive)
    cutoff = timezone.now() - timezone.timedelta(seconds=min_age_s)
    candidates = Generation.objects.filter(status=Generation.Status.RUNNING, started_at__lt=cutoff).exclude(
        worker__in=live
    )
    requeued = 0
    for candidate in candidates.values_list("pk", flat=True)[:100]:
        with transaction.atomic():
            generation = (
                Generation.objects.select_for_update(skip_locked=True)
                .select_related("conversation")
                .filter(pk=candidate, status=Generation.Status.RUNNING)
                .first()
            )
            if generation is None or generation.worker in live:
                continue
            requeued += _generation_requeue_locked(generation=generation, lost=f"worker {generation.worker}")
    return requeued


def generation_requeue(*, generation_id: int, worker: str, lost: str) -> str | None:
    """A worker gives back a generation it claimed and can no longer run (its engine process
    died mid-answer; `lost` says what was lost): set back to PENDING and enqueued again, for
    this worker's new engine or any other, or FAILED with a word to the customer once it has used
    GENERATION_MAX_ATTEMPTS (an answer that kills the engine every time). Returns "requeued" or
    "failed"; None when the generation is no longer this worker's to give back (ended,
    cancelled, claimed again). Locks the generation row."""
    with transaction.atomic():
        generation = (
            Generation.objects.select_for_update()
            .select_related("conversation")
            .filter(pk=generation_id, status=Generation.Status.RUNNING, worker=worker[:200])
            .first()
        )
        if generation is None:
            return None
        return "requeued" if _generation_requeue_locked(generation=generation, lost=lost) else "failed"


def _generation_requeue_locked(*, generation: Generation, lost: str) -> bool:
    """Requeue a RUNNING generation whose row the caller holds locked, or FAIL it when it is out
    of attempts. The customer is told either way: `generation.queued` with no place yet and the
    next attempt's number (the page drops the partial text the lost attempt streamed), or
    `generation.failed`. True when requeued."""
    if generation.attempts >= settings.GENERATION_MAX_ATTEMPTS:
        generation_fail(generation=generation, error=f"{lost} was lost mid-answer")
        return False
    generation.status = Generation.Status.PENDING
    generation.save(update_fields=["status"])
    if generation.kind == Generation.Kind.ANSWER:
        # The event goes before the enqueue: when the enqueue fails, its `generation.failed` is
        # the last word the page hears. The attempt that comes next: the page drops the lost
        # attempt's partial text now.
        send_event_on_commit(
            generation.conversation.group_name,
            protocol.generation_queued(generation_id=generation.pk, position=None, attempt=generation.attempts + 1),
        )
    transaction.on_commit(lambda: generation_enqueue(generation=generation, notify_failure=True))
    return True
