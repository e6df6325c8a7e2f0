"""An engine process that dies mid-answer (the worker lives on) loses no answer: its generations
go back to the queue and a new engine process, which the worker starts, answers them; the
customers' pages are told to drop what the lost attempt streamed; messages sent while the new
engine loads are taken and answered."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from chatbot.conversations.models import Generation, Message
from chatbot.serving.heartbeats import worker_status_list
from tests.conftest import WorkerProcess
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ENDS = {"answer.done", "generation.failed", "error"}


def heartbeat_says(worker: WorkerProcess, state: str, timeout: float = 20) -> bool:
    """Whether the worker's heartbeat reports its active variant in `state` within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in worker_status_list():
            if status.name == worker.name and status.variants[settings.DEFAULT_MODEL_VARIANT]["state"] == state:
                return True
        time.sleep(0.05)
    return False


async def test_a_dead_engine_process_s_answers_are_requeued_and_answered_by_a_new_one(live_worker, tmp_path):
    live_worker.stop()
    # One request in the batch at a time: when the first answer is done the others are still in
    # the engine, queued or running.
    worker = WorkerProcess("engine-lost", tmp_path / "engine-lost.log", ENGINE_MAX_BATCH="1").start()
    customers = [await new_customer() for _ in range(4)]
    try:
        engines = worker.engine_processes()
        assert len(engines) == 2, "one engine process per variant"
        for index, (communicator, _) in enumerate(customers):
            await send_message(communicator, f"where is my order {index}?", client_id=f"e{index}")
        tasks = [asyncio.ensure_future(collect_until(c, ENDS)) for c, _ in customers]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for pid in engines:
            os.kill(pid, signal.SIGKILL)
        # While the worker loads the new engine process, the web still takes messages for the
        # variant: they wait in its queue (the worker says "loading", not "failed").
        assert await asyncio.to_thread(heartbeat_says, worker, "loading"), "the worker reloads the engine"
        newcomer, _ = await new_customer()
        customers.append((newcomer, _))
        await send_message(newcomer, "is my order on its way?", client_id="during-load")
        tasks.append(asyncio.ensure_future(collect_until(newcomer, ENDS)))
        results = await asyncio.gather(*tasks)  # by customer
        assert [events[-1]["type"] for events in results] == ["answer.done"] * 5, results

        @database_sync_to_async
        def stored() -> tuple[list[str], list[int], int]:
            generations = Generation.objects.order_by("pk")
            statuses = list(generations.values_list("status", flat=True))
            attempts = list(generations.values_list("attempts", flat=True))
            customer_messages = Message.objects.filter(author=Message.Author.CUSTOMER).count()
            return statuses, attempts, customer_messages

        statuses, attempts, customer_messages = await stored()
        assert customer_messages == 5, "every customer's message is kept"
        assert statuses == [Generation.Status.DONE] * 5
        assert max(attempts) == 2, "the answers the engine lost ran again"

        for events in results:
            done = events[-1]
            final = done["attempt"]
            # Every worker frame says its attempt; the requeue announced the next one, and what
            # the last attempt streamed is the stored answer (the page drops the rest).
            started = [e["attempt"] for e in events if e["type"] == "generation.started"]
            assert started == list(range(1, final + 1))
            if final == 2:
                assert {
                    "type": "generation.queued",
                    "generation_id": done["generation_id"],
                    "position": None,
                    "attempt": 2,
                } in events
            deltas = [e["text"] for e in events if e["type"] == "answer.delta" and e["attempt"] == final]
            assert "".join(deltas) == done["message"]["text"]
        assert len(worker.engine_processes()) >= 1 and not set(worker.engine_processes()) & set(engines)
        assert worker.process.poll() is None
    finally:
        for communicator, _ in customers:
            await communicator.disconnect()
        await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(live_worker.start)


async def test_an_answer_whose_engine_died_before_it_started_goes_to_a_new_one_in_the_same_attempt(live_worker):
    """An engine process that dies with an answer sent to it but not yet started there did not die
    of that answer: the answer goes to a new engine process at once and costs no attempt, so that
    a death that is the answer's own (mid-answer) still has its rerun."""
    engines = live_worker.engine_processes()
    assert engines
    for pid in engines:
        os.kill(pid, signal.SIGSTOP)  # the answer reaches an engine that cannot start it
    communicator, _ = await new_customer()
    try:
        saved = await send_message(communicator, "where is my order?")
        assert saved["type"] == "message.saved"

        @database_sync_to_async
        def generation() -> Generation:
            return Generation.objects.order_by("-pk").first()

        deadline = time.monotonic() + 60
        while (claimed := await generation()) is None or claimed.status != Generation.Status.RUNNING:
            assert time.monotonic() < deadline, "the worker did not claim the answer"
            await asyncio.sleep(0.05)
        # The worker submits right after its claim; whether the engine dies before or after that
        # submit, it never started the answer.
        await asyncio.sleep(1)
        for pid in engines:
            os.kill(pid, signal.SIGKILL)
        events = await collect_until(communicator, ENDS)
        assert events[-1]["type"] == "answer.done", events
        assert [e["attempt"] for e in events if e["type"] == "generation.started"] == [1]
        assert not [e for e in events if e["type"] == "generation.queued" and e.get("attempt") == 2]
        ended = await generation()
        assert (ended.pk, ended.status, ended.attempts) == (claimed.pk, Generation.Status.DONE, 1)
        assert f"generation {claimed.pk}: the engine process of" in live_worker.output()
        assert not set(live_worker.engine_processes()) & set(engines)
    finally:
        await communicator.disconnect()
