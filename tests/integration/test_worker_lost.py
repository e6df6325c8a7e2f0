"""A worker that dies mid-answer never loses the conversation: its claimed generations go to
another worker (the heartbeat sweep) and every customer still gets an answer."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from channels.db import database_sync_to_async

from chatbot.conversations.models import Generation
from tests.conftest import WorkerProcess
from tests.conversations.test_consumers import new_customer, send_message
from tests.integration.test_chat_path import collect_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_killed_worker_generations_are_answered_by_another_worker(live_worker, tmp_path):
    live_worker.stop()
    # One request in the batch at a time, so that when it is killed several generations are
    # claimed (RUNNING) and waiting inside it.
    doomed = WorkerProcess("doomed", tmp_path / "doomed.log", ENGINE_MAX_BATCH="1").start()
    customers = [await new_customer() for _ in range(8)]
    try:
        for index, (communicator, _) in enumerate(customers):
            await send_message(communicator, f"do you have a store in city {index}?", client_id=f"k{index}")
        # The first answer arrives; then the worker dies with the others claimed.
        first_done = asyncio.wait(
            [asyncio.ensure_future(collect_until(c, {"answer.done"})) for c, _ in customers],
            return_when=asyncio.FIRST_COMPLETED,
        )
        done, pending = await first_done
        os.kill(doomed.process.pid, signal.SIGKILL)
        await asyncio.to_thread(doomed.stop, kill=True)

        @database_sync_to_async
        def orphaned() -> int:
            return Generation.objects.filter(status=Generation.Status.RUNNING, worker="doomed").count()

        assert await orphaned() >= 1, "the worker died with claimed generations"
        await asyncio.to_thread(live_worker.start)  # the rescuer (blocking: off the event loop)
        results = [task.result() for task in done] + list(await asyncio.gather(*pending))
        assert all(events[-1]["type"] == "answer.done" for events in results)

        @database_sync_to_async
        def outcome() -> tuple[list[str], int]:
            statuses = list(Generation.objects.values_list("status", flat=True))
            retried = Generation.objects.filter(attempts=2, status=Generation.Status.DONE).count()
            return statuses, retried

        statuses, retried = await outcome()
        assert statuses == [Generation.Status.DONE] * 8
        assert retried >= 1
    finally:
        for communicator, _ in customers:
            await communicator.disconnect()
        if live_worker.process is None or live_worker.process.poll() is not None:
            await asyncio.to_thread(live_worker.start)
