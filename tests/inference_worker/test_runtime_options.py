"""What the worker asks of transformers' paged batching on each device (pure logic)."""

from types import SimpleNamespace

import torch

from inference_worker.runtime import engine_backend, paged_options


def loaded_on(device: str):
    return SimpleNamespace(model=SimpleNamespace(device=torch.device(device)))


def test_cuda_graphs_and_async_batching_on_cuda_only(settings):
    settings.ENGINE_CUDA_GRAPHS = True
    assert paged_options(loaded_on("cuda")) == {"use_cuda_graph": True, "use_async_batching": True}
    assert paged_options(loaded_on("cpu")) == {}
    settings.ENGINE_CUDA_GRAPHS = False
    assert paged_options(loaded_on("cuda")) == {}


def test_auto_backend_is_paged_on_cuda_and_dense_elsewhere(settings):
    settings.ENGINE_BACKEND = "auto"
    assert engine_backend(loaded_on("cuda")) == "paged"
    assert engine_backend(loaded_on("cpu")) == "dense"
    settings.ENGINE_BACKEND = "dense"
    assert engine_backend(loaded_on("cuda")) == "dense"
