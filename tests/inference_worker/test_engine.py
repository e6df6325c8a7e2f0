"""The batching engine on a real model: transformers' continuous batching with our admission,
routing, step records and cancellation. The model is a small Qwen2 (the R1-Distill-Qwen
architecture) saved and loaded through the Hugging Face code; its weights are random, which is
enough for token-level checks in fp32 (greedy decoding is deterministic)."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import GenerationConfig

from inference_worker.engine.engine import BatchingEngine
from tests.inference_worker.conftest import TINY_EOS

EOS = TINY_EOS  # the shared tiny model's (conftest.py)


GREEDY = GenerationConfig(do_sample=False, max_new_tokens=24, eos_token_id=EOS, pad_token_id=0)


@pytest.fixture(params=["paged", "dense", "dense-slots"])
def backend(request) -> str:
    """Every behaviour holds for both backends: transformers' paged one and our dense one, the
    latter over either of its caches (left-padded, the CPU's; slots, CUDA's, here run eagerly)."""
    return request.param


def make_engine(model, backend: str, *, max_batch: int = 8) -> BatchingEngine:
    return BatchingEngine(
        model=model,
        tokenizer=None,
        variant="test",
        max_batch=max_batch,
        max_new_tokens=24,
        generation_config=GREEDY,
        backend=backend.removesuffix("-slots"),
        dense_cache="slots" if backend.endswith("-slots") else "auto",
    ).start()


def drain(handle):
    return [event for event in handle.events(poll_s=0.05) if event.kind != "idle"]


def test_two_requests_submitted_at_different_times_share_forward_passes(model, backend):
    engine = make_engine(model, backend)
    try:
        first = engine.submit([5, 6, 7, 8], max_new_tokens=200)
        events = first.events(poll_s=0.05)
        # Wait until the first request is decoding, then bring in the second.
        while next(events).kind != "tokens":
            pass
        second = engine.submit([9, 10, 11], max_new_tokens=10)
        drain(second)
        first.cancel()
        list(events)
        shared = [step for step in engine.steps if {first.request_id, second.request_id} <= set(step.request_ids)]
        solo_before = [step for step in engine.steps if step.request_ids == (first.request_id,)]
        assert solo_before, "the first request ran alone before the second arrived"
        # The second joined the running batch: its tokens came from the same forward passes.
        assert len(shared) >= 9
    finally:
        engine.stop()


def test_greedy_outputs_under_batching_equal_one_at_a_time_outputs(model, backend):
    prompts = [[1, 2, 3], [40, 41, 42, 43, 44, 45], [7] * 11, [100, 200, 300, 400], [3, 1, 4, 1, 5, 9, 2, 6]]
    sequential = []
    for prompt in prompts:
        out = model.generate(torch.tensor([prompt]), generation_config=GREEDY)
        sequential.append(out[0, len(prompt) :].tolist())
    engine = make_engine(model, backend)
    try:
        handles = [engine.submit(prompt) for prompt in prompts]
        for handle in handles:
            assert drain(handle)[-1].kind == "finished"
        batched = [list(handle.generated) for handle in handles]
    finally:
        engine.stop()
    assert batched == [tokens[: len(b)] for tokens, b in zip(sequential, batched, strict=True)]
    assert [len(b) for b in batched] == [len(s) for s in sequential]
    assert max(len(step.request_ids) for step in engine.steps) > 1


def test_cancelled_request_frees_its_slot_and_cache_and_the_next_one_starts(model, backend):
    engine = make_engine(model, backend, max_batch=1)
    try:
        running = engine.submit([1, 2, 3, 4], max_new_tokens=500)
        waiting = engine.submit([5, 6, 7])
        events = running.events(poll_s=0.05)
        while next(events).kind != "tokens":
            pass
        assert engine.requests_holding_cache() == {running.request_id}
        assert engine.waiting_count == 1
        running.cancel()
        assert [e.kind for e in events if e.kind != "idle"][-1] == "cancelled"
        assert running.status == "cancelled"
        assert drain(waiting)[-1].kind == "finished"
        deadline = time.monotonic() + 5
        while engine.requests_holding_cache() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.requests_holding_cache() == set()
        assert engine.active_count == 0
    finally:
        engine.stop()


def test_backpressure_keeps_arrival_order_and_reports_places(model, backend):
    engine = make_engine(model, backend, max_batch=2)
    try:
        handles = [engine.submit([10 + i, 20 + i, 30 + i], max_new_tokens=12) for i in range(6)]
        events = {h.request_id: drain(h) for h in handles}
    finally:
        engine.stop()
    first_places = {rid: next((e.position for e in evs if e.kind == "queued"), None) for rid, evs in events.items()}
    assert first_places == {"r0": None, "r1": None, "r2": 1, "r3": 2, "r4": 3, "r5": 4}
    # Places only ever go down, and each waiting request was admitted in arrival order.
    for evs in events.values():
        places = [e.position for e in evs if e.kind == "queued"]
        assert places == sorted(places, reverse=True)
    admitted = sorted(handles, key=lambda h: h.admitted_at)
    assert [h.request_id for h in admitted] == [h.request_id for h in handles]
    assert all(evs[-1].kind == "finished" for evs in events.values())
    assert max(len(step.request_ids) for step in engine.steps) == 2


def test_events_carry_every_token_and_end_with_the_result(model, backend):
    # (Coalescing into fewer updates than tokens is the stream pump's: test_pump.py.)
    engine = make_engine(model, backend)
    try:
        handle = engine.submit([1, 2, 3], max_new_tokens=20)
        events = [e for e in handle.events(poll_s=0.05) if e.kind != "idle"]
    finally:
        engine.stop()
    token_events = [e for e in events if e.kind == "tokens"]
    assert events[-1].kind == "finished" and list(events[-1].tokens) == list(handle.generated)
    # Each one a prefix of the final answer.
    assert token_events
    for event in token_events:
        assert list(event.tokens) == list(handle.generated[: len(event.tokens)])


def test_a_request_after_the_idle_loop_thread_ended_is_answered_as_before(model):
    """The dense loop's thread ends when idle (its OpenMP pool with it) and the next request
    starts a new one, on the same cache and model: the answers are the same as generate's."""
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    with torch.no_grad():
        expected = [model.generate(torch.tensor([p]), generation_config=GREEDY)[0, len(p) :].tolist() for p in prompts]
    engine = make_engine(model, "dense")
    manager = engine._manager
    manager.idle_exit_s = 0.05
    try:
        answers = []
        for prompt in prompts:
            handle = engine.submit(prompt)
            assert drain(handle)[-1].kind == "finished"
            answers.append(list(handle.generated))
            deadline = time.monotonic() + 10
            while manager.loop_thread_alive and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not manager.loop_thread_alive and engine.running
    finally:
        engine.stop()
    assert answers == expected
    assert manager.loop_threads_started == 2


def test_a_cache_that_cannot_fit_the_free_gpu_memory_is_refused_naming_the_settings():
    """R1-Distill-Qwen-1.5B's geometry (built on the meta device: no memory): 28 layers, 2
    key-value heads of 128, bf16, so 28 KiB of keys and values a token."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from inference_worker.engine.engine import ensure_cache_fits, kv_cache_bytes

    config = Qwen2Config(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    assert kv_cache_bytes(model, 1) == 2 * 28 * 2 * 128 * 2
    needed = kv_cache_bytes(model, 256 * 1024)  # 7 GiB
    ensure_cache_fits(model, 256, 1024, free_bytes=needed)
    with pytest.raises(ValueError) as refused:
        ensure_cache_fits(model, 256, 1024, free_bytes=6 * 2**30)
    assert str(refused.value) == (
        "the KV cache for 256 requests (ENGINE_MAX_BATCH) of 1024 tokens (CONTEXT_BUDGET_TOKENS + MAX_NEW_TOKENS) "
        "needs 7.0 GiB, and 6.0 GiB of GPU memory is free: lower one of those settings"
    )


def test_an_engine_on_a_gpu_checks_its_cache_against_the_free_memory_before_it_starts(model, monkeypatch):
    """The wiring of the check above: on CUDA, `start` refuses before building a manager. (The
    CPU model is told it is on CUDA; the refusal comes before anything runs on it.)"""
    from inference_worker.engine import engine as engine_module

    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda")))
    monkeypatch.setattr(engine_module, "free_gpu_bytes", lambda device: 3 * 2**30 // 10)
    engine = BatchingEngine(
        model=model,
        tokenizer=None,
        variant="test",
        max_batch=1000,
        max_new_tokens=24,
        context_tokens=1024,
        backend="dense",
    )
    needed = engine_module.kv_cache_bytes(model, 1000 * 1024)
    assert needed > 3 * 2**30 // 10
    with pytest.raises(ValueError) as refused:
        engine.start()
    assert str(refused.value) == (
        "the KV cache for 1000 requests (ENGINE_MAX_BATCH) of 1024 tokens (CONTEXT_BUDGET_TOKENS + MAX_NEW_TOKENS) "
        f"needs {needed / 2**30:.1f} GiB, and 0.3 GiB of GPU memory is free: lower one of those settings"
    )
    assert engine._manager is None


def test_free_gpu_memory_counts_what_pytorch_holds_unused(monkeypatch):
    from inference_worker.engine.engine import free_gpu_bytes

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 500)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 300)
    assert free_gpu_bytes("cuda:0") == 1200


def test_an_engine_runs_the_dense_backend_unless_told_and_takes_only_a_resolved_one(model):
    """ENGINE_BACKEND=auto is resolved before an engine is built (`backends.resolve_backend`)."""
    assert BatchingEngine(model=model, tokenizer=None, variant="test", max_batch=1, max_new_tokens=1).backend == "dense"
    with pytest.raises(ValueError, match="unknown engine backend 'auto'"):
        BatchingEngine(model=model, tokenizer=None, variant="test", max_batch=1, max_new_tokens=1, backend="auto")


def test_the_paged_backend_ignores_a_reasoning_budget_and_says_so_once(model, caplog):
    """transformers' paged batching has no way to change one request's next input: a budget is
    ignored there (docs/deployment.md), with a warning, and the answer is as without one."""
    engine = make_engine(model, "paged")
    try:
        with caplog.at_level("WARNING", logger="inference_worker.engine.engine"):
            budgeted = [engine.submit([1, 2, 3], reasoning_budget=2) for _ in range(2)]
        for handle in budgeted:
            assert drain(handle)[-1].kind == "finished"
        plain = engine.submit([1, 2, 3])
        drain(plain)
    finally:
        engine.stop()
    assert all(list(handle.generated) == list(plain.generated) for handle in budgeted)
    assert [r.getMessage() for r in caplog.records].count("engine test: the paged backend has no reasoning budget") == 1
