"""`python manage.py run_worker`: the GPU worker.

Loads and checks the model variants first (a missing, partial or corrupt model stops it here,
with the path and the fault), then consumes the Celery queues of those variants with a pool of
threads, all feeding one batching engine per variant.
"""

from __future__ import annotations

import os
import sys
import threading

from celery import signals
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the inference worker (Celery, threads pool, one batching engine per model variant)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", default=None, help="worker name (default: host name + a suffix)")
        parser.add_argument(
            "--concurrency", type=int, default=None, help="generate tasks in flight (WORKER_CONCURRENCY)"
        )
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, **options) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # gptqmodel fetches CUTLASS's sources for its Machete kernel at first use unless offline.
        os.environ.setdefault("GPTQMODEL_OFFLINE", "1")
        import torch

        from chatbot.celery import app
        from inference_worker import tasks  # noqa: F401 - registers the task
        from inference_worker.model_loading import ModelLoadError
        from inference_worker.runtime import WorkerRuntime, set_runtime

        # Only the batch loops run torch on several cores (ENGINE_LOOP_THREADS); the worker's
        # other threads run it on one, and loads and comparisons on threads of their own
        # (inference_worker/torch_threads.py says why).
        torch.set_num_threads(1)
        try:
            runtime = WorkerRuntime(name=options["name"]).start()
        except (ModelLoadError, ValueError) as exc:
            self.stderr.write(self.style.ERROR(f"worker not started: {exc}"))
            sys.exit(2)
        set_runtime(runtime)
        states = ", ".join(f"{v}: {s.state}" for v, s in runtime.slots.items())
        self.stdout.write(f"worker {runtime.name} serving {states}; queues {', '.join(runtime.queues)}")
        worker = app.Worker(
            pool="threads",
            concurrency=options["concurrency"] or settings.WORKER_CONCURRENCY,
            queues=runtime.queues,
            hostname=f"gpu@{runtime.name}",
            loglevel=options["loglevel"],
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
        )
        signals.worker_ready.connect(_start_every_thread, weak=False)
        try:
            worker.start()
        finally:
            runtime.stop()
        sys.exit(worker.exitcode or 0)


def _start_every_thread(sender, **_) -> None:
    """Start all of the pool's task threads now, not one by one as a burst of tasks arrives.

    Python's thread pool starts a thread when a task finds none idle, in the thread that hands
    the task over: here Celery's consumer, which takes the worker's tasks one at a time. Each
    start waits for the new thread to run, and in a busy worker that means waiting for the
    interpreter lock, so the first burst after a start queued its tasks behind the starts.
    Tasks that wait on one barrier make the pool start a thread for each."""
    executor, threads = getattr(sender.pool, "executor", None), sender.pool.limit
    if executor is None:
        return
    barrier = threading.Barrier(threads)
    futures = [executor.submit(barrier.wait, 30) for _ in range(threads)]
    for future in futures:
        future.result()
