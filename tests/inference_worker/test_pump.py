"""The stream pump: one thread streams every request of a worker process, on the real engine
(our dense backend over a small Qwen2 saved and loaded through the Hugging Face code)."""

from __future__ import annotations

import threading
import time

import pytest
from transformers import GenerationConfig

from inference_worker.engine.engine import BatchingEngine
from inference_worker.engine.pump import StreamPump, wait_for
from tests.inference_worker.conftest import TINY_EOS

EOS = TINY_EOS  # the shared tiny model's (conftest.py)


@pytest.fixture
def engine(model):
    engine = BatchingEngine(
        model=model,
        tokenizer=None,
        variant="test",
        max_batch=1,
        max_new_tokens=40,
        generation_config=GenerationConfig(do_sample=False, max_new_tokens=40, eos_token_id=EOS, pad_token_id=0),
        backend="dense",
    ).start()
    yield engine
    engine.stop()


@pytest.fixture
def pump():
    pump = StreamPump(interval_s=0.02)
    yield pump
    pump.stop()


class Recorder:
    def __init__(self, *, fail_on_tokens: bool = False) -> None:
        self.events: list[tuple] = []
        self.threads: set[str] = set()
        self.fail_on_tokens = fail_on_tokens

    def on_event(self, event) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append((event.kind, event.position))

    def on_tokens(self, tokens, *, final: bool) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_on_tokens:
            raise ValueError("the sink broke")
        self.events.append(("tokens", tuple(tokens), final))

    def flush(self) -> None:
        pass


def test_every_request_streams_on_the_pump_thread_in_order_and_ends_with_all_its_tokens(engine, pump):
    sinks = [Recorder() for _ in range(3)]
    watches = [pump.submit(engine, [5 + i, 6, 7], sink=sink, max_new_tokens=30) for i, sink in enumerate(sinks)]
    outcomes = [wait_for(w, every_s=0.05, check=lambda: None) for w in watches]
    assert [o.kind for o in outcomes] == ["finished"] * 3
    # max_batch=1: the second and third waited their turn, told their places, then started.
    assert sinks[0].events[0] == ("started", None)
    assert ("queued", 1) in sinks[1].events and ("queued", 2) in sinks[2].events
    for sink, watch in zip(sinks, watches, strict=True):
        assert sink.threads == {"stream-pump"}
        updates = [e for e in sink.events if e[0] == "tokens"]
        assert updates[-1] == ("tokens", watch.handle.generated, True)
        assert all(not final for _, _, final in updates[:-1])
        # Each update carries every token so far, and there are fewer updates than tokens.
        assert all(updates[i][1] == updates[i + 1][1][: len(updates[i][1])] for i in range(len(updates) - 1))
        assert len(updates) < len(watch.handle.generated)


def test_a_cancelled_request_ends_cancelled_and_frees_its_slot(engine, pump):
    sink = Recorder()
    watch = pump.submit(engine, [5, 6, 7], sink=sink, max_new_tokens=40)
    watch.handle.cancel()
    assert wait_for(watch, every_s=0.05, check=lambda: None).kind == "cancelled"
    assert engine.active_count == 0


def test_a_sink_that_raises_fails_its_request_only_and_the_pump_goes_on(engine, pump):
    broken = pump.submit(engine, [5, 6, 7], sink=Recorder(fail_on_tokens=True), max_new_tokens=30)
    outcome = wait_for(broken, every_s=0.05, check=lambda: None)
    assert outcome.kind == "failed" and "the sink broke" in outcome.error
    assert isinstance(broken.error, ValueError)
    healthy = pump.submit(engine, [8, 9], sink=Recorder(), max_new_tokens=10)
    assert wait_for(healthy, every_s=0.05, check=lambda: None).kind == "finished"
    assert engine.active_count == 0


def test_wait_for_calls_the_check_while_the_request_runs(engine, pump):
    checks = []
    watch = pump.submit(engine, [5, 6, 7], sink=Recorder(), max_new_tokens=40)

    def check() -> None:
        checks.append(1)
        watch.handle.cancel()  # as the task does on the customer's stop

    assert wait_for(watch, every_s=0.0001, check=check).kind == "cancelled"
    assert checks


def test_a_request_whose_pump_has_stopped_ends_failed_instead_of_waiting_forever(engine):
    pump = StreamPump(interval_s=0.02)
    pump.stop()  # as at a worker's shutdown: nothing will service this request's stream
    watch = pump.submit(engine, [5, 6, 7], sink=Recorder(), max_new_tokens=40)
    outcome = wait_for(watch, every_s=0.01, check=lambda: None)
    assert (outcome.kind, outcome.error) == ("failed", "stream pump stopped")
    assert engine.active_count == 0


def test_a_failing_hand_over_does_not_stop_the_pump(engine):
    class Broken:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise ConnectionError("event loop closed")

    pump = StreamPump(interval_s=0.02, around_pass=Broken)
    try:
        watch = pump.submit(engine, [5, 6, 7], sink=Recorder(), max_new_tokens=10)
        assert wait_for(watch, every_s=0.05, check=lambda: None).kind == "finished"
        assert pump.alive
    finally:
        pump.stop()


def test_a_request_ends_only_after_its_last_deltas_are_handed_over(engine):
    """The task publishes the final answer once its watch is done, so the pass's hand-over of
    the last deltas must come first (or the answer could overtake them)."""
    log: list[str] = []

    class HandOver:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            if "final" in log and "handed over" not in log:
                time.sleep(0.05)  # a slow hand-over must still come before the end
                log.append("handed over")

    class FinalRecorder(Recorder):
        def on_tokens(self, tokens, *, final: bool) -> None:
            if final:
                log.append("final")

    pump = StreamPump(interval_s=0.02, around_pass=HandOver)
    try:
        watch = pump.submit(engine, [5, 6, 7], sink=FinalRecorder(), max_new_tokens=10)
        assert wait_for(watch, every_s=0.01, check=lambda: None).kind == "finished"
        log.append("done")
    finally:
        pump.stop()
    assert log == ["final", "handed over", "done"]
