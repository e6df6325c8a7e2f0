"""Writes about model serving: switching the active variant (the rollback toggle) and requesting
a comparison of the variants."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbot.serving.models import ServingState, VariantChange, VariantComparison
from chatbot.serving.selectors import active_variant_cache_clear, worker_status_list

logger = logging.getLogger(__name__)

COMPARE_TASK = "inference_worker.compare_variants"
COMPARE_QUEUE = "compare"


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


def comparison_request(*, user: Any) -> VariantComparison:
    """Queue a comparison of the variants (held-out questions and recent customer questions) for
    a worker that serves both; its result is stored on the returned row."""
    from chatbot.celery import app

    comparison = VariantComparison.objects.create(requested_by=user)

    def send() -> None:
        try:
            app.send_task(COMPARE_TASK, args=[comparison.pk], queue=COMPARE_QUEUE, retry=False, ignore_result=True)
        except Exception as exc:  # noqa: BLE001
            VariantComparison.objects.filter(pk=comparison.pk).update(
                status=VariantComparison.Status.FAILED, error=f"broker unreachable: {exc}", finished_at=timezone.now()
            )

    transaction.on_commit(send)
    return comparison
