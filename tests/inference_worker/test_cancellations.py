"""The worker's one reader of cancellation flags, against the real Redis."""

from __future__ import annotations

import threading

import pytest

from chatbot.redis_client import cancel_key, get_redis
from inference_worker.cancellations import CancelWatcher


class Request:
    """Stands in for the engine's request handle: records that it was cancelled."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


class CountingRedis:
    """The real client, counting the commands the watcher sends."""

    def __init__(self) -> None:
        self.client = get_redis()
        self.commands: list[str] = []

    def mget(self, keys):
        self.commands.append("MGET")
        return self.client.mget(keys)


@pytest.fixture
def flags():
    ids = range(900_001, 900_011)
    yield ids
    get_redis().delete(*(cancel_key(i) for i in ids))


def test_one_read_for_all_watched_generations_cancels_only_the_flagged_ones(flags):
    redis = CountingRedis()
    watcher = CancelWatcher(interval_s=3600, redis_client=lambda: redis)  # polled by hand here
    try:
        requests = {generation_id: Request() for generation_id in flags}
        for generation_id, request in requests.items():
            watcher.watch(generation_id, request)
        assert watcher.poll() == []
        flagged = [flags[2], flags[7]]
        for generation_id in flagged:
            get_redis().set(cancel_key(generation_id), "1")
        assert watcher.poll() == flagged
        assert redis.commands == ["MGET", "MGET"]
        assert [i for i, r in requests.items() if r.cancelled.is_set()] == flagged
        assert watcher.watched == len(flags) - 2  # a cancelled request is watched no more
        watcher.unwatch(flags[0], requests[flags[0]])
        assert watcher.watched == len(flags) - 3
    finally:
        watcher.stop()


def test_two_runs_of_one_generation_are_both_watched_and_each_unwatches_only_its_own(flags):
    """A rerun of a generation can overlap its first run (a task redelivered while the first
    still runs): the first run's end must not leave the rerun uncancellable."""
    watcher = CancelWatcher(interval_s=3600)
    try:
        first, rerun = Request(), Request()
        watcher.watch(flags[0], first)
        watcher.watch(flags[0], rerun)
        watcher.unwatch(flags[0], first)
        get_redis().set(cancel_key(flags[0]), "1")
        assert watcher.poll() == [flags[0]]
        assert rerun.cancelled.is_set() and not first.cancelled.is_set()
        assert watcher.watched == 0
    finally:
        watcher.stop()


def test_a_flag_raised_before_the_watch_began_still_cancels(flags):
    get_redis().set(cancel_key(flags[0]), "1")
    watcher = CancelWatcher(interval_s=3600)
    try:
        request = Request()
        watcher.watch(flags[0], request)
        assert watcher.poll() == [flags[0]]
        assert request.cancelled.is_set()
    finally:
        watcher.stop()


def test_the_watcher_thread_polls_by_itself_and_nothing_is_read_while_nothing_is_watched(flags):
    redis = CountingRedis()
    watcher = CancelWatcher(interval_s=0.01, redis_client=lambda: redis)
    try:
        assert watcher.poll() == [] and redis.commands == []
        request = Request()
        watcher.watch(flags[0], request)
        get_redis().set(cancel_key(flags[0]), "1")
        assert request.cancelled.wait(timeout=10)
    finally:
        watcher.stop()


def test_the_watcher_outlives_redis_errors_and_cancels_once_redis_answers(flags):
    """Redis away for a while: the thread keeps polling and acts on the flag when it can read it."""
    real = CountingRedis()
    failures = []

    class Flaky:
        def mget(self, keys):
            if len(failures) < 3:
                failures.append(1)
                raise ConnectionError("Redis is away")
            return real.mget(keys)

    watcher = CancelWatcher(interval_s=0.01, redis_client=Flaky)
    try:
        request = Request()
        get_redis().set(cancel_key(flags[0]), "1")
        watcher.watch(flags[0], request)
        assert request.cancelled.wait(timeout=10)
        assert len(failures) == 3
    finally:
        watcher.stop()
