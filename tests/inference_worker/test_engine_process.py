"""The engine in a process of its own (`engine_process.RemoteEngine`): a real child process running
the real engine on the project's demo model (small preset, the FP16 variant, greedy), driven
over its pipe as the worker drives it."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from inference_worker import engine_process
from inference_worker.engine_factory import EngineSpec, build_engine
from inference_worker.engine_process import RemoteEngine
from inference_worker.model_loading import ModelLoadError
from inference_worker.prompting import chat_template_ids
from inference_worker.runtime import VariantSlot

TIMEOUT_S = 60


def spec_for(paths: dict[str, str], **overrides) -> EngineSpec:
    values = dict(
        variant="fp16",
        path=paths["fp16"],
        quantized=False,
        device="cpu",
        load_threads=1,
        max_batch=4,
        max_new_tokens=12,
        context_tokens=256,
        temperature=0.0,  # greedy: the same tokens in both processes
    )
    values.update(overrides)
    return EngineSpec(**values)


class Listened:
    """A request's events as the worker's stream pump receives them."""

    def __init__(self) -> None:
        self.events = []
        self.first_tokens = threading.Event()
        self.done = threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        if event.kind == "tokens":
            self.first_tokens.set()
        if event.kind in ("finished", "failed", "cancelled"):
            self.done.set()

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def final(self):
        assert self.done.wait(TIMEOUT_S), f"no final event; got {self.kinds()}"
        return self.events[-1]


@pytest.fixture(scope="module")
def remote(test_models):
    engine = RemoteEngine(spec_for(test_models)).start()
    yield engine
    engine.stop()


def prompts_of(tokenizer) -> list[list[int]]:
    """Questions in the chat template, as the worker sends them (the prompt ends inside `<think>`,
    so the answer's first token is reasoning: a bare question may be answered by the end token
    alone, and then no "tokens" event comes before "finished")."""
    texts = ["Where is my order?", "How do I return an item?", "What are your opening hours?"]
    return [question(tokenizer, text) for text in texts]


def question(tokenizer, text: str) -> list[int]:
    return chat_template_ids(tokenizer, [{"role": "user", "content": text}])


def test_tokens_come_back_as_the_engine_made_them(remote, test_models):
    prompts = prompts_of(remote.tokenizer)
    listened = [Listened() for _ in prompts]
    handles = [remote.submit(prompts[0], listener=listened[0])]
    assert listened[0].first_tokens.wait(TIMEOUT_S)
    # The others join while the first is decoding.
    handles += [remote.submit(p, listener=seen) for p, seen in zip(prompts[1:], listened[1:], strict=True)]
    for handle, seen in zip(handles, listened, strict=True):
        final = seen.final()
        assert final.kind == "finished" and seen.kinds()[0] == "started"
        assert final.tokens == handle.generated and len(handle.generated) > 0
        assert handle.status == "finished"
        assert handle.submitted_at <= handle.admitted_at <= handle.first_token_at <= handle.finished_at

    # The same spec's engine in this process, one request at a time.
    _, local = build_engine(spec_for(test_models))
    try:
        for prompt, handle in zip(prompts, handles, strict=True):
            seen = Listened()
            local.submit(prompt, listener=seen)
            assert seen.final().tokens == handle.generated
    finally:
        local.stop()
    assert remote.tokens_generated >= sum(len(h.generated) for h in handles)


def test_cancel_frees_the_slot_and_the_next_in_line_starts(test_models):
    engine = RemoteEngine(spec_for(test_models, max_batch=1, max_new_tokens=200)).start()
    try:
        prompt = question(engine.tokenizer, "Where is my order?")
        first, second = Listened(), Listened()
        running = engine.submit(prompt, listener=first)
        assert first.first_tokens.wait(TIMEOUT_S)
        engine.submit(prompt, max_new_tokens=3, listener=second)
        running.cancel()
        assert first.final().kind == "cancelled" and running.status == "cancelled"
        assert second.final().kind == "finished"
        assert second.kinds()[:2] == ["queued", "started"] and second.events[0].position == 1
        assert (engine.active_count, engine.waiting_count) == (0, 0)
    finally:
        engine.stop()


def test_a_dead_engine_process_fails_its_requests_and_the_slot_starts_another(test_models, settings):
    settings.ENGINE_PROCESS = True
    settings.MODEL_DEVICE = "cpu"
    settings.TORCH_THREADS = 1
    # Greedy, as the other tests here: the demo checkpoint samples (temperature 0.3), and a sampled
    # answer to this raw prompt can be its end token alone (about one in six), "finished" with no
    # "tokens" event to wait for.
    settings.GENERATION_TEMPERATURE = 0.0
    slot = VariantSlot("fp16")
    engine = slot.load()
    try:
        seen = Listened()
        handle = engine.submit(question(engine.tokenizer, "Where is my order?"), max_new_tokens=90, listener=seen)
        assert seen.first_tokens.wait(TIMEOUT_S), seen.kinds()
        os.kill(engine.pid, signal.SIGKILL)
        final = seen.final()
        assert final.kind == "failed" and "engine process exited" in final.error
        assert handle.status == "failed" and engine.exited
        with pytest.raises(RuntimeError, match="not running"):
            engine.submit([1, 2, 3])

        again = slot.load()
        assert again is not engine and again.pid != engine.pid
        seen = Listened()
        again.submit(question(again.tokenizer, "Hello"), max_new_tokens=4, listener=seen)
        assert seen.final().kind == "finished"
    finally:
        slot.engine.stop()


def test_a_model_that_cannot_load_is_refused_with_its_path(tmp_path):
    missing = tmp_path / "no-model-here"
    with pytest.raises(ModelLoadError) as refused:
        RemoteEngine(spec_for({"fp16": str(missing)})).start()
    assert str(missing) in str(refused.value) and "does not exist" in str(refused.value)


def test_the_engine_process_logs_at_the_level_its_spec_names(test_models, capfd):
    """The child's log (its stderr, the worker's) is at the spec's level (ENGINE_LOG_LEVEL): at
    INFO it tells which model it loaded, at WARNING it does not."""
    for level, says_loaded in (("INFO", True), ("WARNING", False)):
        RemoteEngine(spec_for(test_models, log_level=level)).start().stop()
        logged = capfd.readouterr().err
        assert (f"loaded fp16 from {test_models['fp16']}" in logged) is says_loaded, (level, logged)


def test_the_engine_process_outlives_the_workers_signals_and_a_wedged_one_still_cancels(test_models, monkeypatch):
    monkeypatch.setattr(engine_process, "CANCEL_GRACE_S", 0.5)
    engine = RemoteEngine(spec_for(test_models, max_new_tokens=200)).start()
    try:
        # A session of its own, and SIGTERM ignored: Ctrl-C or a SIGTERM for the worker's
        # process group leaves the answers to the worker's warm shutdown.
        assert os.getsid(engine.pid) != os.getsid(0)
        os.kill(engine.pid, signal.SIGTERM)
        seen = Listened()
        engine.submit(question(engine.tokenizer, "Hello"), max_new_tokens=4, listener=seen)
        assert seen.final().kind == "finished"

        # A child that does not answer (stopped here): a cancel still ends the request.
        seen = Listened()
        handle = engine.submit(question(engine.tokenizer, "Where is my order?"), listener=seen)
        assert seen.first_tokens.wait(TIMEOUT_S)
        os.kill(engine.pid, signal.SIGSTOP)
        handle.cancel()
        assert seen.final().kind == "cancelled" and handle.status == "cancelled"
        os.kill(engine.pid, signal.SIGCONT)
    finally:
        engine.stop()


def test_an_engine_that_cannot_start_leaves_its_variant_failed_not_loading(test_models, settings):
    """Whatever stops an engine from starting, the variant is reported `failed` with the reason
    (the web refuses its messages then); `loading` would have the web queue them forever."""
    settings.ENGINE_PROCESS = False
    settings.MODEL_DEVICE = "cpu"
    settings.TORCH_THREADS = 1
    settings.ENGINE_MAX_BATCH = 0  # the engine's admission refuses it (a ValueError), after the model loaded
    slot = VariantSlot("fp16")
    with pytest.raises(ModelLoadError, match="starting its engine failed: ValueError: max_active"):
        slot.load()
    assert slot.state == "failed" and "max_active must be at least 1" in slot.detail
