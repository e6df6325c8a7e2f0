"""Shared by the engine tests: a small Qwen2 (the R1-Distill-Qwen architecture) with random
weights, saved and loaded through the Hugging Face code, in fp32 (greedy decoding is
deterministic, enough for token-level checks)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

TINY_EOS = 511
# The shape of the engine tests' models: an R1-Distill layer at toy size (grouped-query attention,
# two query heads per kv head).
TINY_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def saved_and_loaded(model_class, config, path):
    """A model with random weights (seed 0), saved and loaded back through the Hugging Face code,
    in fp32 (greedy decoding is deterministic, enough for token-level checks)."""
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    config = Qwen2Config(vocab_size=512, max_position_embeddings=1024, eos_token_id=TINY_EOS, **TINY_SHAPE)
    return saved_and_loaded(Qwen2ForCausalLM, config, tmp_path_factory.mktemp("qwen2"))
