"""Celery task and queue names, shared by the web (which sends tasks by name: it never imports
the worker's code) and the worker (which registers the tasks and consumes the queues)."""

from __future__ import annotations

GENERATE_TASK = "inference_worker.generate"
COMPARE_TASK = "inference_worker.compare_variants"
# Only a worker that serves every variant consumes it: a comparison runs both.
COMPARE_QUEUE = "compare"


def generation_queue(variant: str) -> str:
    """Celery queue of a model variant: workers consume the queues of the variants they serve."""
    return f"generate.{variant}"
