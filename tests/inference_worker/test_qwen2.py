"""The Qwen2/Llama layer math the dense runners share (`engine/qwen2.py`); that it decodes as
`generate` does is checked through the runners (test_dense_runner.py, test_slot_runner.py)."""

from __future__ import annotations

import torch

from inference_worker.engine.qwen2 import FusedProjection, packs_prefill_with_decode
from tests.inference_worker.test_dense_runner import model  # noqa: F401 - the Qwen2 and Llama fixture


def test_projections_that_read_different_inputs_are_not_fused():
    assert FusedProjection.fuse([torch.nn.Linear(8, 4), torch.nn.Linear(6, 4)]) is None
    assert FusedProjection.fuse([torch.nn.Linear(8, 4), torch.nn.Linear(8, 4).double()]) is None
    fused = FusedProjection.fuse([torch.nn.Linear(8, 4), torch.nn.Linear(8, 3, bias=False)])
    x = torch.randn(5, 8)
    a, b = fused(x)
    assert a.shape == (5, 4) and b.shape == (5, 3)


def test_the_packed_pass_is_chosen_for_the_r1_distill_architectures_only(model):  # noqa: F811
    assert packs_prefill_with_decode(model)
    model.config.layer_types = ["sliding_attention"] * model.config.num_hidden_layers
    try:
        assert not packs_prefill_with_decode(model)
    finally:
        model.config.layer_types = ["full_attention"] * model.config.num_hidden_layers
