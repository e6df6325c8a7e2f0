"""The dense runner's tensor side on a real Qwen2 (saved and loaded through the Hugging Face
code): the packed pass (decode rows and arrivals' prompts through the layers together) and the
fallback through the model's own forward both give `generate`'s greedy tokens, whatever the
batch's composition when a request joins or leaves."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from inference_worker.engine.dense_runner import DenseModelRunner, packs_prefill_with_decode

NEW_TOKENS = 12
EOS = 299


def saved_and_loaded(model_class, config, path):
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request, tmp_path_factory):
    shape = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=EOS,
    )
    if request.param == "qwen2":
        return saved_and_loaded(Qwen2ForCausalLM, Qwen2Config(**shape), tmp_path_factory.mktemp("qwen2"))
    return saved_and_loaded(LlamaForCausalLM, LlamaConfig(**shape), tmp_path_factory.mktemp("llama"))


def one_at_a_time(model, prompts):
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0)
    with torch.no_grad():
        return [
            until_eos(model.generate(torch.tensor([p]), generation_config=config)[0, len(p) :].tolist())
            for p in prompts
        ]


def until_eos(tokens: list[int]) -> list[int]:
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def batched(runner, prompts):
    """Four prompts join every third step (the others decoding meanwhile); a request leaves as
    soon as it has its tokens, so rows of different ages and lengths share each pass."""
    generated: dict[int, list[int]] = {}
    rows: list[int] = []
    waiting = list(range(len(prompts)))
    step = 0
    while waiting or rows:
        joining = waiting[:4] if step % 3 == 0 else []
        waiting = waiting[len(joining) :]
        next_tokens, first_tokens = runner.step([generated[i][-1] for i in rows], [prompts[i] for i in joining])
        for i, token in zip(rows, next_tokens, strict=True):
            generated[i].append(token)
        for i, token in zip(joining, first_tokens, strict=True):
            generated[i] = [token]
        rows += joining
        kept = [k for k, i in enumerate(rows) if len(generated[i]) < NEW_TOKENS and generated[i][-1] != EOS]
        if len(kept) != len(rows):
            order = runner.keep(kept)
            assert sorted(order) == kept
            rows = [rows[k] for k in order]
        step += 1
    return [until_eos(generated[i]) for i in range(len(prompts))]


PROMPTS = [[5 + i, 17, 40 + 3 * i, 8][: 2 + i % 3] + list(range(60, 60 + i)) for i in range(11)]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "model-forward"])
def test_greedy_tokens_equal_generate_as_requests_join_and_leave(model, packed):
    runner = DenseModelRunner(
        model=model, generation_config=GenerationConfig(do_sample=False), pad_token_id=0, packed=packed
    )
    assert batched(runner, PROMPTS) == one_at_a_time(model, PROMPTS)
    assert runner.cache is None  # every row left: the cache is freed


def test_the_packed_pass_is_chosen_for_the_r1_distill_architectures_only(model):
    assert packs_prefill_with_decode(model)
    model.config.layer_types = ["sliding_attention"] * model.config.num_hidden_layers
    try:
        assert not packs_prefill_with_decode(model)
    finally:
        model.config.layer_types = ["full_attention"] * model.config.num_hidden_layers
