"""The copying circuit the build sets up in a fresh demo model (inference_worker/demo_model/copying.py)."""

from __future__ import annotations

import torch
from transformers import Qwen2ForCausalLM

from inference_worker.demo_model.copying import (
    copy_accuracy,
    copy_layout,
    hold_copy_circuit,
    induction_landing,
    install_copy_circuit,
)
from inference_worker.demo_model.train import PRESETS, model_config


class _Sized:
    """What model_config reads of a tokenizer."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 7

    def __len__(self) -> int:
        return 1901


def _fresh(preset: str) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(model_config(preset=PRESETS[preset], tokenizer=_Sized()))


def test_a_fresh_model_copies_a_repeated_span_once_the_circuit_is_installed() -> None:
    model = _fresh("reader")
    assert copy_accuracy(model) < 0.02  # a random model does not copy
    layout = install_copy_circuit(model)
    assert layout is not None
    assert copy_accuracy(model) > 0.95
    # Far apart too: the match does not depend on the distance (RoPE's slow pairs).
    assert copy_accuracy(model, span=60, filler=400) > 0.9


def test_the_induction_head_lands_where_the_copy_is_and_the_measure_tells_a_broken_one() -> None:
    model = _fresh("reader")
    implementation = model.config._attn_implementation
    layout = copy_layout(model.config, context=3)
    assert induction_landing(model, layout) < 0.1  # before the circuit: attention lands anywhere
    install_copy_circuit(model)
    assert induction_landing(model, layout) > 0.95
    assert model.config._attn_implementation == implementation  # it reads attention eagerly, then puts it back
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():  # the match's query gone: the head attends evenly, it lands nowhere
        rows = slice(layout.induction_head * head_dim, (layout.induction_head + 1) * head_dim)
        model.model.layers[1].self_attn.q_proj.weight[rows] = 0
    assert induction_landing(model, layout) < 0.1


def test_far_copies_need_the_slow_rope_base() -> None:
    """The small geometry keeps RoPE's base 10^4: its 'slow' pairs turn too far over 400
    positions, so the circuit copies what is near and misses what is far."""
    model = _fresh("small")
    assert PRESETS["small"].rope_theta == 10_000.0
    install_copy_circuit(model)
    assert copy_accuracy(model) > 0.8
    assert copy_accuracy(model, span=60, filler=400) < 0.5


def test_the_copy_goes_through_the_induction_head_the_layout_names() -> None:
    model = _fresh("reader")
    layout = install_copy_circuit(model)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():  # silence the induction head's output: the copy is gone
        columns = slice(layout.induction_head * head_dim, (layout.induction_head + 1) * head_dim)
        model.model.layers[1].self_attn.o_proj.weight[:, columns] = 0
    assert copy_accuracy(model) < 0.05


def test_a_geometry_without_room_keeps_its_weights() -> None:
    model = _fresh("tiny")
    assert copy_layout(model.config) is None and not PRESETS["tiny"].copy_circuit
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert install_copy_circuit(model) is None
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_held_circuit_attention_does_not_train_and_the_rest_does() -> None:
    model = _fresh("reader")
    layout = install_copy_circuit(model)
    hold_copy_circuit(model, layout)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    held = {
        "layer0": (
            model.model.layers[0].self_attn,
            slice(layout.previous_heads[0] * head_dim, (layout.previous_heads[-1] + 1) * head_dim),
        ),
        "layer1": (
            model.model.layers[1].self_attn,
            slice(layout.induction_head * head_dim, (layout.induction_head + 1) * head_dim),
        ),
    }
    before = {
        name: {p: getattr(att, p).weight[rows].clone() for p in ("q_proj", "k_proj", "v_proj")}
        for name, (att, rows) in held.items()
    }
    free_before = model.model.layers[2].self_attn.q_proj.weight.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    ids = torch.randint(8, 1900, (4, 64), generator=torch.Generator().manual_seed(5))
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, (att, rows) in held.items():
        for proj in ("q_proj", "k_proj", "v_proj"):
            assert torch.equal(getattr(att, proj).weight[rows], before[name][proj]), (name, proj)
    assert not torch.equal(model.model.layers[2].self_attn.q_proj.weight, free_before)


def _ambiguous_pairs(rows: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows holding `x a b p`, then `y a b q` (the same two tokens before different ones), random
    tokens, then `y a b`: what follows it is q, which only the token before `a b` tells."""
    generator = torch.Generator().manual_seed(11)
    x, y, a, b, p, q = torch.randint(16, 1900, (6, rows, 1), generator=generator)
    fill = torch.randint(16, 1900, (rows, 30), generator=generator)
    bos = torch.ones(rows, 1, dtype=torch.long)
    ids = torch.cat([bos, fill[:, :10], x, a, b, p, fill[:, 10:20], y, a, b, q, fill[:, 20:], y, a, b], 1)
    return ids, q[:, 0]


def test_three_tokens_of_context_tell_apart_what_two_cannot() -> None:
    ids, expected = _ambiguous_pairs()
    right = {}
    for context in (2, 3):
        model = _fresh("reader")
        assert install_copy_circuit(model, context=context).context == context
        assert copy_accuracy(model) > 0.95
        with torch.no_grad():
            right[context] = (model(input_ids=ids).logits[:, -1].argmax(-1) == expected).float().mean().item()
    assert right[3] > 0.9 and right[2] < 0.75, right


def test_the_workers_engine_decodes_a_copying_model_as_generate(tmp_path) -> None:
    """The reader geometry (RoPE base 10^6, ungrouped KV heads, the circuit's biases), saved and
    loaded back, decodes in the worker's batching runner token for token as `generate` does."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from inference_worker.engine.dense_runner import DenseModelRunner
    from tests.inference_worker.test_dense_runner import EOS, batched, one_at_a_time

    model = _fresh("reader")
    install_copy_circuit(model, context=PRESETS["reader"].copy_context)
    model.config.eos_token_id = EOS
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert loaded.config.rope_parameters["rope_theta"] == 1_000_000.0
    generator = torch.Generator().manual_seed(2)
    # Prompts that repeat themselves, so the copying head has something to copy.
    prompts, continuations = [], []
    for i in range(6):
        span = torch.randint(16, 290, (8 + i,), generator=generator).tolist()
        prompts.append([1, *span, *span[: 3 + i % 3]])
        continuations.append(span[3 + i % 3])
    expected = one_at_a_time(loaded, prompts)
    assert sum(e[0] == c for e, c in zip(expected, continuations, strict=True)) >= 5  # it copies
    runner = DenseModelRunner(model=loaded, generation_config=GenerationConfig(do_sample=False), pad_token_id=0)
    assert batched(runner, prompts) == expected
