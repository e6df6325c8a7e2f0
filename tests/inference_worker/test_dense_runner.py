"""The dense runner's tensor side on a real Qwen2 (saved and loaded through the Hugging Face
code): the packed pass (decode rows and arrivals' prompts through the layers together) and the
fallback through the model's own forward both give `generate`'s greedy tokens, whatever the
batch's composition when a request joins or leaves."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from inference_worker.demo_model.corpus import heldout_examples
from inference_worker.engine.dense_runner import DenseModelRunner
from inference_worker.prompting import chat_template_ids
from tests.inference_worker.conftest import TINY_SHAPE, saved_and_loaded

NEW_TOKENS = 12
EOS = 299


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request, tmp_path_factory):
    shape = dict(vocab_size=300, max_position_embeddings=512, eos_token_id=EOS, **TINY_SHAPE)
    if request.param == "qwen2":
        return saved_and_loaded(Qwen2ForCausalLM, Qwen2Config(**shape), tmp_path_factory.mktemp("qwen2"))
    return saved_and_loaded(LlamaForCausalLM, LlamaConfig(**shape), tmp_path_factory.mktemp("llama"))


def one_at_a_time(model, prompts, new_tokens: int = NEW_TOKENS):
    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, pad_token_id=0)
    with torch.no_grad():
        return [
            until_eos(model.generate(torch.tensor([p]), generation_config=config)[0, len(p) :].tolist())
            for p in prompts
        ]


def until_eos(tokens: list[int], eos: int = EOS) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def four_every_third_step(step: int) -> int:
    return 4 if step % 3 == 0 else 0


def batched(runner, prompts, eos: int = EOS, *, joins=four_every_third_step, new_tokens: int = NEW_TOKENS):
    """`joins(step)` prompts join at each step (four every third step by default; the others
    decode meanwhile); a request leaves as soon as it has its tokens, so rows of different ages
    and lengths share each pass."""
    generated: dict[int, list[int]] = {}
    rows: list[int] = []
    waiting = list(range(len(prompts)))
    step = 0
    while waiting or rows:
        joining = waiting[: joins(step)]
        waiting = waiting[len(joining) :]
        next_tokens, first_tokens = runner.step([generated[i][-1] for i in rows], [prompts[i] for i in joining])
        for i, token in zip(rows, next_tokens, strict=True):
            generated[i].append(token)
        for i, token in zip(joining, first_tokens, strict=True):
            generated[i] = [token]
        rows += joining
        kept = [k for k, i in enumerate(rows) if len(generated[i]) < new_tokens and generated[i][-1] != eos]
        if len(kept) != len(rows):
            order = runner.keep(kept)
            assert sorted(order) == kept
            rows = [rows[k] for k in order]
        step += 1
    return [until_eos(generated[i], eos) for i in range(len(prompts))]


PROMPTS = [[5 + i, 17, 40 + 3 * i, 8][: 2 + i % 3] + list(range(60, 60 + i)) for i in range(11)]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "model-forward"])
def test_greedy_tokens_equal_generate_as_requests_join_and_leave(model, packed):
    expected = one_at_a_time(model, PROMPTS)
    runner = DenseModelRunner(
        model=model, generation_config=GenerationConfig(do_sample=False), pad_token_id=0, packed=packed
    )
    if packed:  # q/k/v and gate/up run as one matmul each
        projections = runner.projections
        assert all(f is not None and not f.int4 for f in projections.fused_qkv + projections.fused_gate_up)
    assert batched(runner, PROMPTS) == expected
    assert runner.cache is None  # every row left: the cache is freed
    # The modules' weights are now views of the fused ones: the model's own forward is unchanged.
    assert one_at_a_time(model, PROMPTS) == expected


def test_every_way_the_cache_grows_keeps_the_tokens_of_generate(model, monkeypatch):
    """Arrivals are written into the slabs' free rows while they fit; the slabs are copied into
    new ones when the rows run out or a prompt is wider than the cache, and when a decode step
    has no spare column left (then without the columns that became padding in every row). A
    long, crowded run goes through each of these, and every answer stays `generate`'s."""
    from inference_worker.engine import dense_runner

    calls = {"append_rows": 0, "_restack": 0, "column": 0}
    append_rows, restack = dense_runner._SlabLayer.append_rows, dense_runner.DenseModelRunner._restack

    def counted_append(self, *args):
        calls["append_rows"] += 1
        return append_rows(self, *args)

    def counted_restack(self, keys=None, values=None, new_mask=None):
        calls["_restack" if new_mask is not None else "column"] += 1
        return restack(self, keys, values, new_mask)

    monkeypatch.setattr(dense_runner._SlabLayer, "append_rows", counted_append)
    monkeypatch.setattr(dense_runner.DenseModelRunner, "_restack", counted_restack)
    new_tokens = dense_runner.SLAB_HEADROOM + 16
    prompts = [[3 + i, 11 + 2 * i] + list(range(100 + i, 100 + i + (i * 7) % 19)) for i in range(26)]
    expected = one_at_a_time(model, prompts, new_tokens)
    runner = DenseModelRunner(model=model, generation_config=GenerationConfig(do_sample=False), pad_token_id=0)
    waves = [3, 0, 0, 1, 0, 6, 0, 0, 2, 0, 0, 0, 5, 0, 1, 0, 4, 0, 0, 0]

    assert batched(runner, prompts, joins=lambda step: waves[step % len(waves)], new_tokens=new_tokens) == expected
    assert calls["append_rows"] and calls["_restack"] and calls["column"]


@pytest.mark.parametrize("around_int4", ["float32", "bfloat16"])
def test_the_4bit_model_fuses_its_int4_projections_and_still_decodes_as_generate(test_models, around_int4):
    """The GPTQ checkpoint the suite builds, loaded as the worker loads it (gptqmodel's CPU int4
    layers, the rest in fp32 or in bf16, GPTQ_CPU_DTYPE): q/k/v and gate/up are stacked int4
    matmuls, and greedy tokens still equal `generate`'s one request at a time."""
    from inference_worker.model_loading import load_variant

    loaded = load_variant(
        variant="gptq-int4",
        path=test_models["gptq-int4"],
        quantized=True,
        device="cpu",
        gptq_cpu_dtype_setting=around_int4,
    )
    model = loaded.model
    assert model.lm_head.weight.dtype == getattr(torch, around_int4)
    assert loaded.precision == f"int4 layers (TorchAtenLinear) in bf16, the rest in {around_int4}"
    eos = loaded.eos_token_ids[0]
    # Customers' questions as the worker sends them: random token ids give near-ties that bf16
    # rounds either way, which says nothing about the fused layers.
    prompts = [
        chat_template_ids(loaded.tokenizer, [{"role": "user", "content": e.messages[-1]["content"]}])
        for e in heldout_examples()[:7]
    ]
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0, eos_token_id=eos)

    def generate_each() -> list[list[int]]:
        with torch.no_grad():
            return [
                until_eos(model.generate(torch.tensor([p]), generation_config=config)[0, len(p) :].tolist(), eos)
                for p in prompts
            ]

    expected = generate_each()
    runner = DenseModelRunner(model=model, generation_config=GenerationConfig(do_sample=False), pad_token_id=0)
    assert all(f is not None and f.int4 for f in runner.projections.fused_qkv + runner.projections.fused_gate_up)
    assert batched(runner, prompts, eos) == expected
    again = generate_each()  # the int4 layers read their rows of the stacked weight
    assert again == expected
