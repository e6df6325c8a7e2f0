"""What the worker asks of transformers' paged batching on each device (pure logic)."""

from inference_worker.engine_host import EngineSpec, engine_backend, paged_options
from inference_worker.runtime import engine_spec


def test_cuda_graphs_and_async_batching_on_cuda_only():
    spec = EngineSpec(variant="v", path="p", quantized=False, cuda_graphs=True)
    assert paged_options(spec, "cuda") == {"use_cuda_graph": True, "use_async_batching": True}
    assert paged_options(spec, "cpu") == {}
    assert paged_options(EngineSpec(variant="v", path="p", quantized=False, cuda_graphs=False), "cuda") == {}


def test_auto_backend_is_dense_and_paged_only_when_asked():
    spec = EngineSpec(variant="v", path="p", quantized=False, backend="auto")
    assert engine_backend(spec) == "dense"
    assert engine_backend(EngineSpec(variant="v", path="p", quantized=False, backend="paged")) == "paged"


def test_the_spec_carries_the_settings(settings):
    settings.ENGINE_BACKEND = "dense"
    settings.ENGINE_CUDA_GRAPHS = False
    settings.ENGINE_PREFILL_WAIT_MS = 4.0
    settings.GENERATION_TEMPERATURE = 0.0
    spec = engine_spec("fp16")
    assert (spec.backend, spec.cuda_graphs, spec.prefill_wait_s, spec.temperature) == ("dense", False, 0.004, 0.0)
    assert spec.path == settings.MODEL_VARIANTS["fp16"]["path"] and not spec.quantized
    assert spec.context_tokens == settings.CONTEXT_BUDGET_TOKENS + settings.MAX_NEW_TOKENS
