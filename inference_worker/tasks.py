"""The worker's Celery tasks: thin edges that take an id and run one flow."""

from __future__ import annotations

from chatbot.celery import app
from chatbot.queues import COMPARE_TASK, GENERATE_TASK
from inference_worker.comparison import run_comparison
from inference_worker.generation import run_generation
from inference_worker.runtime import get_runtime


@app.task(name=GENERATE_TASK, bind=True, acks_late=True, ignore_result=True)
def generate(self, generation_id: int) -> str:
    return run_generation(generation_id=generation_id, runtime=get_runtime())


@app.task(name=COMPARE_TASK, bind=True, acks_late=True, ignore_result=True)
def compare_variants(self, comparison_id: int) -> str:
    return run_comparison(comparison_id=comparison_id, worker=get_runtime().name)
