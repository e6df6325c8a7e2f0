"""The FP16-vs-4-bit comparison that staff request from the rollback page, run by a worker that
serves both variants; its result is stored on the VariantComparison row."""

from __future__ import annotations

import logging

from django.conf import settings

from chatbot.conversations import selectors
from chatbot.serving.services import comparison_end, comparison_start

logger = logging.getLogger(__name__)


def run_comparison(*, comparison_id: int, worker: str) -> str:
    """Loads its own copies of both variants (the serving engines' models are busy in their
    batches), on a thread of its own whose torch threads end with it."""
    from inference_worker.demo_model.evaluate import evaluate_models
    from inference_worker.torch_threads import on_own_thread, torch_work_threads

    if not comparison_start(comparison_id=comparison_id, worker=worker):
        return "skipped"
    try:
        extra_prompts = selectors.recent_customer_prompts(limit=settings.COMPARE_RECENT_QUESTIONS)
        result = on_own_thread(
            lambda: evaluate_models(
                fp16_path=settings.MODEL_VARIANTS["fp16"]["path"],
                gptq_path=settings.MODEL_VARIANTS["gptq-int4"]["path"],
                extra_prompts=extra_prompts,
                limit=settings.COMPARE_HELDOUT_LIMIT or None,
            ),
            threads=torch_work_threads(),
            name="compare-variants",
        )
    except Exception as exc:  # noqa: BLE001 - stored for the admin to read
        logger.exception("comparison %s failed", comparison_id)
        comparison_end(comparison_id=comparison_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    comparison_end(comparison_id=comparison_id, result=result)
    return "done"
