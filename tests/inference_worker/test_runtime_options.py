"""What the worker asks of the engine on each device, from its settings (pure logic)."""

from types import SimpleNamespace

from inference_worker.engine_factory import EngineSpec, Sampling, checkpoint_sampling, paged_options
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


def test_each_variant_samples_as_its_checkpoint_says_unless_the_settings_say_otherwise(settings):
    sampled = SimpleNamespace(do_sample=True, temperature=0.3, top_p=0.8)
    assert checkpoint_sampling(sampled) == Sampling(temperature=0.3, top_p=0.8)
    assert checkpoint_sampling(SimpleNamespace(do_sample=False, temperature=0.6)) == Sampling(0.0, 1.0)
    assert checkpoint_sampling(sampled, temperature=0.6, top_p=0.95) == Sampling(0.6, 0.95)
    assert checkpoint_sampling(sampled, temperature=0.0) == Sampling(0.0, 0.8)

    settings.GENERATION_TEMPERATURE = settings.GENERATION_TOP_P = None
    settings.MODEL_VARIANTS = {
        "fp16": {"path": "p", "quantized": False},
        "gptq-int4": {"path": "q", "quantized": True, "temperature": 0.6, "top_p": 0.95},
    }
    assert (engine_spec("fp16").temperature, engine_spec("fp16").top_p) == (None, None)  # the checkpoint's
    assert (engine_spec("gptq-int4").temperature, engine_spec("gptq-int4").top_p) == (0.6, 0.95)
    settings.GENERATION_TEMPERATURE = 0.0  # every variant greedy, but where a variant sets its own
    assert engine_spec("fp16").temperature == 0.0 and engine_spec("gptq-int4").temperature == 0.6
