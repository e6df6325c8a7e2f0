"""Loading a model variant for serving, refusing anything incomplete or mismatched.

A variant is a folder (or a hub id) holding a transformers checkpoint and its tokenizer. Before a
single weight is loaded the folder is checked: config, weights, tokenizer, and whether it is a
GPTQ checkpoint exactly when the variant is the quantized one. The demo build writes
`build-info.json` last, with each weight file's size and sha256; where it is present the files
must match it (a crash mid-build or a copy cut short is caught here). After loading, one forward
pass must give finite logits. Any failure raises `ModelLoadError` naming the path and the fault,
so a worker stops at start instead of serving a half-loaded model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Hashing every shard of a 7B checkpoint at each start would take minutes; above this size the
# check compares sizes only.
HASH_MAX_BYTES = 512 * 1024 * 1024


class ModelLoadError(RuntimeError):
    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"model at {path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class LoadedModel:
    variant: str
    path: str
    model: Any
    tokenizer: Any
    quantized: bool
    precision: str = ""  # what it computes in, in words

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def is_local(path: str) -> bool:
    return Path(path).exists() or path.startswith((".", "/", "~"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(folder, f"{path.name} is not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(folder, f"{path.name} is not a JSON object")
    return data


def check_model_folder(path: str | Path, *, quantized: bool) -> dict:
    """Check a local variant folder without loading weights; return its config. Raises ModelLoadError."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(folder, "folder does not exist (build it with `python manage.py build_demo_model`)")
    if not folder.is_dir():
        raise ModelLoadError(folder, "is not a folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(folder, "config.json is missing: not a model folder, or a partial copy")
    config = _read_json(config_path, folder)
    if "model_type" not in config:
        raise ModelLoadError(folder, "config.json has no model_type")

    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise ModelLoadError(folder, f"no weights: expected one of {', '.join(WEIGHT_FILES)}")
    if weights[0] == "model.safetensors.index.json":
        index = _read_json(folder / weights[0], folder)
        shards = sorted(set(index.get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if not shards or missing:
            raise ModelLoadError(folder, f"weight shards missing: {', '.join(missing) or 'index lists none'}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(folder, "no tokenizer files (tokenizer.json / tokenizer_config.json)")

    quant = config.get("quantization_config")
    if quantized:
        if not isinstance(quant, dict) or str(quant.get("quant_method", "")).lower() != "gptq":
            raise ModelLoadError(
                folder, "configured as the GPTQ variant, but config.json has no GPTQ quantization_config"
            )
    elif quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
        raise ModelLoadError(
            folder, f"configured as the unquantized variant, but the checkpoint is quantized ({method})"
        )

    build_info_path = folder / "build-info.json"
    if build_info_path.exists():
        build_info = _read_json(build_info_path, folder)
        for name, expected in (build_info.get("files") or {}).items():
            file_path = folder / name
            if not file_path.is_file():
                raise ModelLoadError(folder, f"{name} listed in build-info.json is missing")
            size = file_path.stat().st_size
            if "size" in expected and size != expected["size"]:
                raise ModelLoadError(
                    folder, f"{name} is {size} bytes, build-info.json says {expected['size']}: corrupt or partial"
                )
            if "sha256" in expected and size <= HASH_MAX_BYTES and _sha256(file_path) != expected["sha256"]:
                raise ModelLoadError(folder, f"{name} does not match its sha256 in build-info.json: corrupt")
    return config


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


GPTQ_CPU_DTYPES = ("auto", "bfloat16", "float32")
# gptqmodel's GPTQ kernels for CUDA that GPTQ_CUDA_KERNEL may name (gptqmodel 7.6's backend names);
# "auto" leaves the choice to gptqmodel. Marlin, ExLlamaV2 and Machete are CUDA extensions that
# gptqmodel compiles with nvcc at their first use (cached under ~/.cache/gptqmodel: Marlin's two
# builds took 339 s on an H200); Triton's kernel compiles in seconds; `torch` dequantizes and
# multiplies in PyTorch. On an H200 offline, "auto" picked Machete, whose build wants CUTLASS's
# sources from the network, and the load failed (docs/benchmarks.md).
GPTQ_CUDA_KERNELS = ("auto", "marlin", "exllama_v2", "machete", "triton", "torch")


def cuda_dtype(checkpoint_dtype: Any, *, bf16_supported: bool) -> str:
    """What a checkpoint computes in on CUDA: bf16 where its config says bfloat16 (the
    R1-Distill checkpoints are bf16, and fp16's narrower range can overflow in activations that
    bf16 holds) and the GPU has bf16, else fp16."""
    name = str(checkpoint_dtype or "").removeprefix("torch.")
    return "bfloat16" if name == "bfloat16" and bf16_supported else "float16"


def quant_kernels(model) -> list[str]:
    """The class names of the quantized layers that serve `model` (gptqmodel's kernels)."""
    return sorted({type(module).__name__ for module in model.modules() if hasattr(module, "qweight")})


def cpu_has_bf16_arithmetic() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512_BF16 or AMX), as torch detects it."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def gptq_cpu_dtype(setting: str, *, has_bf16: bool) -> str:
    """What a GPTQ model computes in around its int4 layers on the CPU: `setting` (GPTQ_CPU_DTYPE)
    if it names a dtype; for "auto", bf16 where the CPU has bf16 arithmetic, else fp32."""
    if setting not in GPTQ_CPU_DTYPES:
        raise ValueError(f"GPTQ_CPU_DTYPE must be one of {', '.join(GPTQ_CPU_DTYPES)}, not {setting!r}")
    if setting == "auto":
        return "bfloat16" if has_bf16 else "float32"
    return setting


def _fp32_around_int4(model) -> None:
    """On the CPU the GPTQ kernel (`_weight_int4pack_mm_for_cpu`) takes bf16 input, so the model
    is loaded in bf16; but AVX2 CPUs have no bf16 arithmetic, and there every other op
    (embedding, norms, rotary embedding, attention, the output head) ran slower in bf16 than in
    fp32 (docs/benchmarks.md). So on those everything but the int4 layers goes to fp32: the int4
    layers cast their input to bf16 and their output back. (Where the CPU has bf16 arithmetic,
    the model stays in bf16.)"""
    import torch

    for module in model.modules():
        if hasattr(module, "qweight"):
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype == torch.bfloat16:
                setattr(module, name, torch.nn.Parameter(param.data.float(), requires_grad=False))
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.dtype == torch.bfloat16:
                module.register_buffer(name, buffer.float(), persistent=name not in module._non_persistent_buffers_set)
    model.config.dtype = torch.float32


def _skip_identity_permutation(model) -> None:
    """gptqmodel's CPU int4 layer (`TorchAtenLinear`, gptqmodel 7.6) gathers its input's columns
    by the checkpoint's act-order permutation on every call (`x[:, ret_idx]`), also when there
    is none (desc_act=False: `ret_idx` is 0..n-1), a sizeable part of a decode step
    (docs/benchmarks.md). Where the permutation is the identity, the layer calls the int4 kernel
    directly. Call after a first forward pass (the layer builds `ret_idx` in it)."""
    import torch

    from inference_worker.engine.int4 import int4_matmul

    for module in model.modules():
        ret_idx = getattr(module, "ret_idx", None)
        if not isinstance(ret_idx, torch.Tensor) or not hasattr(module, "_fused_op_forward"):
            continue
        if not torch.equal(ret_idx.long(), torch.arange(ret_idx.numel(), device=ret_idx.device)):
            continue

        def direct(x: torch.Tensor, layer=module) -> torch.Tensor:
            return int4_matmul(x, layer.qweight, layer.group_size, layer.scales_and_zeros)

        module._fused_op_forward = direct
        module.int4_direct = True  # the dense runners may fuse such layers (`qwen2.FusedProjection`)


def load_variant(
    *,
    variant: str,
    path: str,
    quantized: bool,
    device: str = "auto",
    gptq_cpu_dtype_setting: str = "auto",
    gptq_cuda_kernel: str = "triton",
    cudnn_attention: bool = False,
) -> LoadedModel:
    """Check, load and smoke-test one variant. Raises ModelLoadError with the path and the fault.
    `gptq_cpu_dtype_setting` (GPTQ_CPU_DTYPE) chooses what a GPTQ model computes in around its
    int4 layers on the CPU (`gptq_cpu_dtype`). On CUDA, `gptq_cuda_kernel` (GPTQ_CUDA_KERNEL)
    names the GPTQ kernel ("auto": gptqmodel's choice), and `cudnn_attention` (CUDA_SDPA_CUDNN)
    says whether PyTorch's attention may use cuDNN (a process-wide switch)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPTQConfig

    if gptq_cuda_kernel not in GPTQ_CUDA_KERNELS:
        raise ValueError(f"GPTQ_CUDA_KERNEL must be one of {', '.join(GPTQ_CUDA_KERNELS)}, not {gptq_cuda_kernel!r}")
    if is_local(path):
        check_model_folder(path, quantized=quantized)
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)
    around_int4 = ""
    if quantized and device == "cpu":
        around_int4 = gptq_cpu_dtype(gptq_cpu_dtype_setting, has_bf16=cpu_has_bf16_arithmetic())
    extra: dict[str, Any] = {}
    try:
        # GPTQ on the CPU runs its int4 kernel with bf16 activations (it is far slower in fp32);
        # the unquantized model runs in fp32 on the CPU, where half-precision matmuls are slow.
        # On a GPU both run in the checkpoint's own half precision (`cuda_dtype`).
        if cuda:
            config = AutoConfig.from_pretrained(path)
            checkpoint_dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
            dtype = getattr(torch, cuda_dtype(checkpoint_dtype, bf16_supported=torch.cuda.is_bf16_supported()))
            if quantized and gptq_cuda_kernel != "auto":
                quant = getattr(config, "quantization_config", None) or {}
                bits = int(quant.get("bits", 4) if isinstance(quant, dict) else getattr(quant, "bits", 4))
                extra["quantization_config"] = GPTQConfig(bits=bits, backend=gptq_cuda_kernel)
        elif quantized:
            dtype = torch.bfloat16
        else:
            dtype = torch.float32
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device, **extra)
    except Exception as exc:  # noqa: BLE001 - any failure here means the variant cannot be served
        raise ModelLoadError(path, f"loading failed: {type(exc).__name__}: {exc}") from exc
    model.eval()
    if around_int4 == "float32":
        _fp32_around_int4(model)
    is_gptq = getattr(getattr(model.config, "quantization_config", None), "quant_method", None)
    if quantized and str(getattr(is_gptq, "value", is_gptq)).lower() != "gptq":
        raise ModelLoadError(path, "loaded without GPTQ quantization")
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ModelLoadError(
            path,
            f"tokenizer has {len(tokenizer)} tokens, the embedding only {model.get_input_embeddings().num_embeddings}",
        )
    try:
        with torch.no_grad():
            ids = tokenizer("hello", return_tensors="pt").input_ids.to(model.device)
            logits = model(ids).logits.float()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(path, f"test forward pass failed: {type(exc).__name__}: {exc}") from exc
    if not bool(torch.isfinite(logits).all()):
        raise ModelLoadError(path, "test forward pass gave non-finite logits: corrupt weights")
    if quantized and device == "cpu":
        _skip_identity_permutation(model)
    if around_int4:
        precision = f"int4 layers ({', '.join(quant_kernels(model))}) in bf16, the rest in {around_int4}"
    elif quantized:
        precision = f"int4 layers ({', '.join(quant_kernels(model))}), the rest in {dtype}"
    else:
        precision = str(dtype)
    logger.info("loaded %s from %s on %s (%s)", variant, path, device, precision)
    return LoadedModel(
        variant=variant, path=path, model=model, tokenizer=tokenizer, quantized=quantized, precision=precision
    )
