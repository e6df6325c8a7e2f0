"""What the worker asks of the engine on each device, from its settings (pure logic)."""

from inference_worker.engine_factory import EngineSpec, paged_options
from inference_worker.runtime import engine_spec


def test_cuda_graphs_and_async_batching_on_cuda_only():
    spec = EngineSpec(variant="v", path="p", quantized=False, cuda_graphs=True)
    assert paged_options(spec, "cuda") == {"use_cuda_graph": True, "use_async_batching": True}
    assert paged_options(spec, "cpu") == {}
    assert paged_options(EngineSpec(variant="v", path="p", quantized=False, cuda_graphs=False), "cuda") == {}


def test_the_spec_carries_the_settings(settings):
    settings.ENGINE_BACKEND = "dense"
    settings.ENGINE_CUDA_GRAPHS = False
    settings.ENGINE_PREFILL_WAIT_MS = 4.0
    settings.GENERATION_TEMPERATURE = 0.0
    settings.ENGINE_LOG_LEVEL = "WARNING"
    spec = engine_spec("fp16")
    assert (spec.backend, spec.cuda_graphs, spec.prefill_wait_s, spec.temperature) == ("dense", False, 0.004, 0.0)
    assert spec.log_level == "WARNING"
    assert spec.path == settings.MODEL_VARIANTS["fp16"]["path"] and not spec.quantized
    assert spec.context_tokens == settings.CONTEXT_BUDGET_TOKENS + settings.MAX_NEW_TOKENS
