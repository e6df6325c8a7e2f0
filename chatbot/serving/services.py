"""Writes about model serving: switching the active variant (the rollback toggle), a gradual
rollout of a candidate variant (its share, each new conversation's arm, the guard that rolls it
back), and requesting a comparison of the variants."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbot.queues import COMPARE_QUEUE, COMPARE_TASK
from chatbot.serving.guard import Assessment, guard_assess
from chatbot.serving.heartbeats import worker_status_list
from chatbot.serving.models import Rollout, RolloutAssignment, ServingState, VariantChange, VariantComparison
from chatbot.serving.selectors import (
    ServingPlan,
    active_variant_cache_clear,
    rollout_comparison,
    rollout_draw,
)

logger = logging.getLogger(__name__)


class SwitchRefused(ValueError):
    """A toggle refused, with the words to show the admin; serving stays where it was."""


def serving_variant_switch(
    *, user: Any, to_variant: str, reason: str, expected_from: str | None = None
) -> VariantChange:
    """Move new generations to `to_variant` and write the audit record.

    Locks the serving-state row, so two admins switching at once are serialised: the second sees
    the first's result (and is refused if it no longer matches what they saw, `expected_from`).
    Refused when the variant is unknown or already active, without a reason, or when no live
    worker can serve it (it is not loaded and cannot load, or every worker is down). A switch is
    all or nothing: it ends a rollout in progress (every new generation on `to_variant`).
    """
    reason = (reason or "").strip()
    if to_variant not in settings.MODEL_VARIANTS:
        raise SwitchRefused(f"Unknown variant {to_variant!r}; choose one of {', '.join(settings.MODEL_VARIANTS)}.")
    if not reason:
        raise SwitchRefused("Give a reason for the switch: it goes into the audit record.")
    with transaction.atomic():
        state = _state_locked()
        current = state.active_variant
        if expected_from is not None and expected_from != current:
            raise SwitchRefused(
                f"Serving was switched to {current} by someone else meanwhile; reload the page and decide again."
            )
        if to_variant == current:
            raise SwitchRefused(f"{to_variant} is already the active variant.")
        workers = worker_status_list()
        if not any(worker.can_serve(to_variant) for worker in workers):
            states = "; ".join(
                f"{w.name}: {w.variants.get(to_variant, {}).get('state', 'not served')}" for w in workers
            )
            raise SwitchRefused(
                f"No running worker can serve {to_variant} ({states or 'no worker is running'}); serving stays on {current}."
            )
        state.active_variant = to_variant
        _rollout_end_locked(state=state, outcome=Rollout.Outcome.SWITCHED)
        state.save(update_fields=["active_variant", "rollout", "candidate_percent", "changed_at"])
        change = VariantChange.objects.create(
            changed_by=user, from_variant=current, to_variant=to_variant, reason=reason[:2000]
        )
    active_variant_cache_clear()
    logger.info("serving switched from %s to %s by %s: %s", current, to_variant, user, reason)
    return change


class ComparisonRefused(ValueError):
    """A comparison request refused, with the words to show the admin; nothing was queued."""


def _state_locked() -> ServingState:
    """The serving-state row, locked for the transaction (made on first use)."""
    state, _ = ServingState.objects.select_for_update().get_or_create(
        pk=1, defaults={"active_variant": settings.DEFAULT_MODEL_VARIANT}
    )
    return state


def _rollout_end_locked(*, state: ServingState, outcome: str, evidence: dict | None = None) -> Rollout | None:
    """End the state's rollout, if any (the caller holds the state's lock and saves it)."""
    rollout = state.rollout
    if rollout is None:
        return None
    rollout.outcome = outcome
    rollout.ended_at = timezone.now()
    rollout.guard_evidence = evidence
    rollout.save(update_fields=["outcome", "ended_at", "guard_evidence"])
    state.rollout = None
    state.candidate_percent = 0
    return rollout


# -- a gradual rollout ------------------------------------------------------------------------------


def rollout_share_set(
    *, user: Any, candidate: str, percent: int, reason: str, expected_percent: int | None = None
) -> VariantChange:
    """Set the share (percent) of new conversations that start on `candidate`, beside the active
    variant, and write the audit record. From 0% a rollout starts (the live comparison counts from
    there); between 1 and 99% a conversation keeps the variant it started on; back at 0% the
    rollout ends rolled back (every new generation on the active variant); at 100% it ends
    promoted: the candidate becomes the active variant (today's switch).

    Locks the serving-state row, as the switch does. Refused: an unknown candidate, or the active
    variant itself; a share outside 0-100; no reason; the share already set; a rollout of another
    candidate in progress; a share above 0 for a candidate no live worker can serve; a share that
    changed since the page was loaded (`expected_percent`)."""
    reason = (reason or "").strip()
    if candidate not in settings.MODEL_VARIANTS:
        raise SwitchRefused(f"Unknown variant {candidate!r}; choose one of {', '.join(settings.MODEL_VARIANTS)}.")
    if not 0 <= percent <= 100:
        raise SwitchRefused("The share is a whole percentage from 0 to 100.")
    if not reason:
        raise SwitchRefused("Give a reason for the change: it goes into the audit record.")
    with transaction.atomic():
        state = _state_locked()
        baseline = state.active_variant
        rollout = state.rollout
        current = state.candidate_percent if rollout is not None else 0
        if expected_percent is not None and expected_percent != current:
            raise SwitchRefused(
                f"The candidate's share was changed to {current}% by someone else meanwhile; reload the page and decide again."
            )
        if candidate == baseline:
            raise SwitchRefused(f"{candidate} is the active variant; a rollout needs the other one as its candidate.")
        if rollout is not None and rollout.candidate != candidate:
            raise SwitchRefused(f"A rollout of {rollout.candidate} is in progress; end it (0% or 100%) first.")
        if percent == current:
            raise SwitchRefused(f"{candidate} already has {percent}% of new conversations.")
        if percent > 0:
            workers = worker_status_list()
            if not any(worker.can_serve(candidate) for worker in workers):
                raise SwitchRefused(f"No running worker can serve {candidate}; its share stays {current}%.")
        if rollout is None:
            rollout = state.rollout = Rollout.objects.create(baseline=baseline, candidate=candidate, started_by=user)
        fields = ["rollout", "candidate_percent", "changed_at"]
        if percent == 100:
            state.active_variant = candidate
            fields.append("active_variant")
            _rollout_end_locked(state=state, outcome=Rollout.Outcome.PROMOTED)
        elif percent == 0:
            _rollout_end_locked(state=state, outcome=Rollout.Outcome.ROLLED_BACK)
        else:
            state.candidate_percent = percent
        state.save(update_fields=fields)
        change = VariantChange.objects.create(
            kind=VariantChange.Kind.SHARE,
            changed_by=user,
            from_variant=baseline,
            to_variant=candidate,
            percent_from=current,
            percent_to=percent,
            reason=reason[:2000],
        )
    active_variant_cache_clear()
    logger.info("rollout: %s share %s%% -> %s%% by %s: %s", candidate, current, percent, user, reason)
    return change


def rollout_assign(*, conversation: Any, plan: ServingPlan) -> str:
    """The variant a new conversation starts on, recorded for the rollout when one is splitting
    (its share between 1 and 99%): the candidate when the conversation's draw falls below the
    share. The conversation keeps it (`selectors.rollout_conversation_variant`)."""
    if not plan.splitting:
        return plan.baseline
    draw = rollout_draw(rollout_id=plan.rollout_id, public_id=conversation.public_id)
    variant = plan.candidate if draw < plan.percent / 100 else plan.baseline
    RolloutAssignment.objects.create(conversation=conversation, rollout_id=plan.rollout_id, variant=variant)
    return variant


def rollout_guard_set(*, user: Any, enabled: bool, reason: str) -> VariantChange:
    """Turn the rollout guard on or off, with a reason, audited. Locks the serving-state row."""
    reason = (reason or "").strip()
    if not reason:
        raise SwitchRefused("Give a reason: turning the guard on or off goes into the audit record.")
    with transaction.atomic():
        state = _state_locked()
        if state.guard_enabled == enabled:
            raise SwitchRefused(f"The guard is already {'on' if enabled else 'off'}.")
        state.guard_enabled = enabled
        state.save(update_fields=["guard_enabled", "changed_at"])
        change = VariantChange.objects.create(
            kind=VariantChange.Kind.GUARD_SETTING,
            changed_by=user,
            from_variant=state.active_variant,
            to_variant=state.active_variant,
            percent_from=int(not enabled),
            percent_to=int(enabled),
            reason=reason[:2000],
        )
    logger.info("rollout guard turned %s by %s: %s", "on" if enabled else "off", user, reason)
    return change


def rollout_guard_check(*, now: Any = None) -> VariantChange | None:
    """The guard: when a rollout is splitting and the guard is on, compare its arms
    (`selectors.rollout_comparison`) and, if the candidate is worse on any signal
    (`guard.guard_assess`), set its share to 0, end the rollout rolled back by the guard with the
    evidence, and write the audit record (no user: the guard) whose reason holds the evidence.
    Returns that record, or None. It never raises a share. Every worker's sweep runs it; the
    rollback locks the serving-state row and checks again that the same rollout still runs, so
    only one acts."""
    state = ServingState.objects.filter(pk=1).select_related("rollout").first()
    if state is None or state.rollout is None or not state.guard_enabled:
        return None
    comparison = rollout_comparison(rollout=state.rollout, now=now)
    assessments = guard_assess(baseline=comparison.baseline, candidate=comparison.candidate)
    breaches = [assessment for assessment in assessments if assessment.breached]
    if not breaches:
        return None
    return _rollout_guard_roll_back(rollout_id=state.rollout_id, assessments=assessments, breaches=breaches)


def _rollout_guard_roll_back(
    *, rollout_id: int, assessments: list[Assessment], breaches: list[Assessment]
) -> VariantChange | None:
    with transaction.atomic():
        state = _state_locked()
        if state.rollout_id != rollout_id or not state.guard_enabled:
            return None  # another worker's guard acted first, or staff changed the plan meanwhile
        percent = state.candidate_percent
        evidence = {
            "breaches": [breach.as_dict() for breach in breaches],
            "signals": [assessment.as_dict() for assessment in assessments],
        }
        rollout = _rollout_end_locked(state=state, outcome=Rollout.Outcome.GUARD, evidence=evidence)
        state.save(update_fields=["rollout", "candidate_percent", "changed_at"])
        reason = "Rolled back by the guard: the candidate is worse than the baseline. " + "; ".join(
            breach.evidence() for breach in breaches
        )
        change = VariantChange.objects.create(
            kind=VariantChange.Kind.GUARD_ROLLBACK,
            changed_by=None,
            from_variant=rollout.baseline,
            to_variant=rollout.candidate,
            percent_from=percent,
            percent_to=0,
            reason=reason[:2000],
        )
    active_variant_cache_clear()
    logger.warning("rollout guard rolled %s back from %s%% to 0%%: %s", change.to_variant, percent, reason)
    return change


def rollout_alert_acknowledge(*, user: Any, rollout_id: int) -> bool:
    """A staff member has read the guard's rollback: its banner goes away. False when there was
    nothing to acknowledge."""
    return bool(
        Rollout.objects.filter(pk=rollout_id, outcome=Rollout.Outcome.GUARD, acknowledged_at__isnull=True).update(
            acknowledged_by=user, acknowledged_at=timezone.now()
        )
    )


def comparison_request(*, user: Any) -> VariantComparison:
    """Queue a comparison of the variants (held-out questions and recent customer questions) for
    a worker that serves both; its result is stored on the returned row.

    One at a time: refused (ComparisonRefused) while another is pending or running. A pending one
    that no worker took within CELERY_VISIBILITY_TIMEOUT_S (none serves both variants, say) is
    ended FAILED and no longer holds the next back. Locks the serving-state row, so two requests
    at once are serialised and the second sees the first's row."""
    from chatbot.celery import app

    open_statuses = [VariantComparison.Status.PENDING, VariantComparison.Status.RUNNING]
    with transaction.atomic():
        ServingState.objects.select_for_update().get_or_create(
            pk=1, defaults={"active_variant": settings.DEFAULT_MODEL_VARIANT}
        )
        stale = timezone.now() - timezone.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT_S)
        VariantComparison.objects.filter(status=VariantComparison.Status.PENDING, created_at__lt=stale).update(
            status=VariantComparison.Status.FAILED,
            error=f"no worker took it within {settings.CELERY_VISIBILITY_TIMEOUT_S} s (none serves both variants?)",
            finished_at=timezone.now(),
        )
        running = VariantComparison.objects.filter(status__in=open_statuses).order_by("created_at").first()
        if running is not None:
            by = f" by {running.requested_by}" if running.requested_by_id else ""
            raise ComparisonRefused(
                f"a comparison requested {running.created_at:%Y-%m-%d %H:%M:%S} UTC{by} is "
                f"{running.get_status_display().lower()}; this page shows its result when it is done, "
                "then you can run another."
            )
        comparison = VariantComparison.objects.create(requested_by=user)

        def send() -> None:
            try:
                app.send_task(COMPARE_TASK, args=[comparison.pk], queue=COMPARE_QUEUE, retry=False, ignore_result=True)
            except Exception as exc:  # noqa: BLE001
                comparison_end(comparison_id=comparison.pk, error=f"broker unreachable: {exc}")

        transaction.on_commit(send)
    return comparison


def comparison_start(*, comparison_id: int, worker: str) -> bool:
    """A worker takes a pending comparison. False (and nothing changes) when it is not pending:
    a redelivered task does not run it twice."""
    return bool(
        VariantComparison.objects.filter(pk=comparison_id, status=VariantComparison.Status.PENDING).update(
            status=VariantComparison.Status.RUNNING, worker=worker[:200], started_at=timezone.now()
        )
    )


def comparison_end(*, comparison_id: int, result: dict[str, Any] | None = None, error: str = "") -> None:
    """Store a comparison's result (DONE), or its error (FAILED)."""
    status = VariantComparison.Status.FAILED if error else VariantComparison.Status.DONE
    VariantComparison.objects.filter(pk=comparison_id).update(
        status=status, result=result, error=error[:2000], finished_at=timezone.now()
    )


def comparison_fail_orphans(*, alive: Iterable[str] = ()) -> int:
    """End FAILED the running comparisons whose worker no longer sends heartbeats (it died while
    running them): they would otherwise show as running forever. Part of the orphan sweep that
    every worker runs; `alive` names workers to count as live whatever their heartbeat says (the
    sweeping worker itself). Returns how many were ended."""
    live = {worker.name for worker in worker_status_list()} | set(alive)
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.WORKER_HEARTBEAT_TTL_S * 2)
    orphans = VariantComparison.objects.filter(status=VariantComparison.Status.RUNNING, started_at__lt=cutoff).exclude(
        worker__in=live
    )
    ended = 0
    for comparison in orphans:
        ended += VariantComparison.objects.filter(pk=comparison.pk, status=VariantComparison.Status.RUNNING).update(
            status=VariantComparison.Status.FAILED,
            error=f"worker {comparison.worker} stopped while running it; run it again",
            finished_at=timezone.now(),
        )
    return ended
