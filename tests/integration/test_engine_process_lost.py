"""An engine process that dies mid-answer (the worker lives on): its answers end FAILED and the
customers are told, their messages stay saved, and the next message is answered by a new engine
process that the worker starts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Generation, Message
from tests.conftest import WorkerProcess
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ENDS = {"answer.done", "generation.failed", "error"}


def engine_processes(worker: WorkerProcess) -> list[int]:
    """The worker's engine processes (`python -m inference_worker.engine_host`)."""
    children = subprocess.run(
        ["pgrep", "-P", str(worker.process.pid), "-f", "inference_worker.engine_host"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return [int(pid) for pid in children]


async def test_a_dead_engine_process_fails_its_answers_and_the_next_message_gets_a_new_one(live_worker, tmp_path):
    live_worker.stop()
    # One request in the batch at a time: when the first answer is done the others are still in
    # the engine, queued or running.
    worker = WorkerProcess("engine-lost", tmp_path / "engine-lost.log", ENGINE_MAX_BATCH="1").start()
    customers = [await new_customer() for _ in range(4)]
    try:
        engines = engine_processes(worker)
        assert len(engines) == 2, "one engine process per variant"
        for index, (communicator, _) in enumerate(customers):
            await send_message(communicator, f"where is my order {index}?", client_id=f"e{index}")
        tasks = [asyncio.ensure_future(collect_until(c, ENDS)) for c, _ in customers]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for pid in engines:
            os.kill(pid, signal.SIGKILL)
        outcomes = [events[-1]["type"] for events in await asyncio.gather(*tasks)]  # by customer
        assert outcomes.count("answer.done") >= 1
        assert outcomes.count("generation.failed") >= 1, outcomes

        @database_sync_to_async
        def stored() -> tuple[list[str], list[str], int]:
            failed = Generation.objects.filter(status=Generation.Status.FAILED)
            errors = list(failed.values_list("error", flat=True))
            statuses = list(Generation.objects.values_list("status", flat=True))
            customer_messages = Message.objects.filter(author=Message.Author.CUSTOMER).count()
            return statuses, errors, customer_messages

        statuses, errors, customer_messages = await stored()
        assert customer_messages == 4, "every customer's message is kept"
        assert all("engine process exited" in error for error in errors), errors
        assert Generation.Status.RUNNING not in statuses

        # The worker lives on: a customer whose answer failed sends again and is answered.
        retry_customer = customers[outcomes.index("generation.failed")][0]
        await send_message(retry_customer, "where is my order, please?", client_id="again")
        events = await collect_until(retry_customer, ENDS)
        assert events[-1]["type"] == "answer.done", events
        assert len(engine_processes(worker)) >= 1 and not set(engine_processes(worker)) & set(engines)
        assert worker.process.poll() is None
    finally:
        for communicator, _ in customers:
            await communicator.disconnect()
        await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(live_worker.start)
