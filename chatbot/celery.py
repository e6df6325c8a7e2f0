"""The Celery app. The web only sends tasks by name (it never imports the worker's code, which
needs torch); the worker imports `inference_worker.tasks`."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

app = Celery("chatbot")


@app.on_configure.connect
def _configure(sender: Celery, **kwargs: object) -> None:
    # Read at configure time, not import time, so tests can change settings first.
    from django.conf import settings

    from chatbot.queues import generation_queue

    sender.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Above the longest generation: an unacknowledged task is redelivered only once its
            # worker is surely gone.
            "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_default_queue=generation_queue(settings.DEFAULT_MODEL_VARIANT),
        result_backend=None,
    )
