"""Writes about model serving: switching the active variant (the rollback toggle) and requesting
a comparison of the variants."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbot.queues import COMPARE_QUEUE, COMPARE_TASK
from chatbot.serving.heartbeats import worker_status_list
from chatbot.serving.models import ServingState, VariantChange, VariantComparison
from chatbot.serving.selectors import active_variant_cache_clear

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
    worker can serve it (it is not loaded and cannot load, or every worker is down).
    """
    reason = (reason or "").strip()
    if to_variant not in settings.MODEL_VARIANTS:
        raise SwitchRefused(f"Unknown variant {to_variant!r}; choose one of {', '.join(settings.MODEL_VARIANTS)}.")
    if not reason:
        raise SwitchRefused("Give a reason for the switch: it goes into the audit record.")
    with transaction.atomic():
        state, _ = ServingState.objects.select_for_update().get_or_create(
            pk=1, defaults={"active_variant": settings.DEFAULT_MODEL_VARIANT}
        )
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
        state.save(update_fields=["active_variant", "changed_at"])
        change = VariantChange.objects.create(
            changed_by=user, from_variant=current, to_variant=to_variant, reason=reason[:2000]
        )
    active_variant_cache_clear()
    logger.info("serving switched from %s to %s by %s: %s", current, to_variant, user, reason)
    return change


class ComparisonRefused(ValueError):
    """A comparison request refused, with the words to show the admin; nothing was queued."""


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
