"""A variant's batching engine, built from plain settings (`EngineSpec`): in the worker's process
(ENGINE_PROCESS=false) or in the child that `engine_process.RemoteEngine` starts. Imports no
Django: the worker fills the spec from its settings (`runtime.engine_spec`)."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inference_worker.engine.backends import resolve_backend
from inference_worker.engine.engine import BatchingEngine
from inference_worker.model_loading import LoadedModel, ModelLoadError

if TYPE_CHECKING:
    from transformers import GenerationConfig


@dataclass(frozen=True)
class EngineSpec:
    """Everything a variant's engine is built from (the worker's settings, resolved)."""

    variant: str
    path: str
    quantized: bool
    device: str = "auto"
    gptq_cpu_dtype: str = "auto"
    gptq_cuda_kernel: str = "triton"
    cudnn_attention: bool = False
    load_threads: int = 1
    max_batch: int = 32
    max_new_tokens: int = 256
    context_tokens: int = 1024
    backend: str = "auto"  # ENGINE_BACKEND, as set: `resolve_backend` turns it into the one that runs
    loop_threads: int = 1
    prefill_wait_s: float = 0.0
    cuda_graphs: bool = True
    # None: the checkpoint's own (its generation_config.json); 0 temperature: greedy.
    temperature: float | None = None
    top_p: float | None = None
    log_level: str = "INFO"  # the engine process's logging (ENGINE_LOG_LEVEL)


def paged_options(spec: EngineSpec, device_type: str) -> dict[str, Any]:
    """transformers' CUDA graphs and async batching for the paged backend on CUDA
    (ENGINE_CUDA_GRAPHS); nothing elsewhere, where transformers has no graph backend."""
    if device_type == "cuda" and spec.cuda_graphs:
        return {"use_cuda_graph": True, "use_async_batching": True}
    return {}


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0: greedy
    top_p: float


def checkpoint_sampling(config: Any, *, temperature: float | None = None, top_p: float | None = None) -> Sampling:
    """The sampling a variant runs with: ``temperature``/``top_p`` where given, else the
    checkpoint's generation config (greedy where it does not sample)."""
    samples = bool(getattr(config, "do_sample", False))
    if temperature is None:
        temperature = float(getattr(config, "temperature", None) or 1.0) if samples else 0.0
    if top_p is None:
        top_p = float(getattr(config, "top_p", None) or 1.0) if samples else 1.0
    return Sampling(temperature=temperature, top_p=top_p)


def generation_config_for(loaded: LoadedModel, spec: EngineSpec) -> GenerationConfig:
    """The checkpoint's own sampling (its generation_config.json), where the settings name no
    temperature or top-p of their own for the variant."""
    config = loaded.model.generation_config
    config = config.__class__.from_dict(config.to_dict())
    sampling = checkpoint_sampling(config, temperature=spec.temperature, top_p=spec.top_p)
    config.do_sample = sampling.temperature > 0
    config.temperature = sampling.temperature if sampling.temperature > 0 else None
    config.top_p = sampling.top_p if sampling.temperature > 0 else None
    config.top_k = None
    config.max_new_tokens = spec.max_new_tokens
    config.eos_token_id = loaded.eos_token_ids
    if config.pad_token_id is None:
        config.pad_token_id = loaded.tokenizer.pad_token_id
    return config


def build_engine(spec: EngineSpec) -> tuple[LoadedModel, BatchingEngine]:
    """Load the variant (on a thread of its own, with `load_threads` torch threads) and start
    its engine. Raises ModelLoadError."""
    from inference_worker.model_loading import load_variant
    from inference_worker.torch_threads import on_own_thread

    loaded = on_own_thread(
        lambda: load_variant(
            variant=spec.variant,
            path=spec.path,
            quantized=spec.quantized,
            device=spec.device,
            gptq_cpu_dtype_setting=spec.gptq_cpu_dtype,
            gptq_cuda_kernel=spec.gptq_cuda_kernel,
            cudnn_attention=spec.cudnn_attention,
        ),
        threads=spec.load_threads,
        name=f"load-{spec.variant}",
    )
    device_type = loaded.model.device.type
    engine = BatchingEngine(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        variant=spec.variant,
        max_batch=spec.max_batch,
        max_new_tokens=spec.max_new_tokens,
        context_tokens=spec.context_tokens,
        generation_config=generation_config_for(loaded, spec),
        backend=resolve_backend(spec.backend),
        loop_threads=spec.loop_threads,
        prefill_wait_s=spec.prefill_wait_s,
        paged_options=paged_options(spec, device_type),
        cuda_graphs=spec.cuda_graphs,
    ).start()
    return loaded, engine


def settle_gc() -> None:
    """Python's cyclic garbage collector, tuned for a process that serves a loaded model: what
    exists now (the model, the libraries: a few hundred thousand objects) moves out of the
    collector's view (`gc.freeze`), and the youngest generation is collected every 20,000
    allocations instead of 700. With the engine's events and records for a full batch every
    step, collections had been most of the engine's own per-step bookkeeping (measured on the CPU
    with a runner that returns at once), which counts where a step replayed from a CUDA graph is
    short (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def load_tokenizer(path: str) -> Any:
    """The variant's tokenizer alone (the worker's side of an engine process). Raises
    ModelLoadError."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means the variant cannot be served
        raise ModelLoadError(path, f"loading the tokenizer failed: {type(exc).__name__}: {exc}") from exc
