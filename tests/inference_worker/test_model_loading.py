"""A missing, partial or corrupt model folder, or one that does not match its variant, is refused
before anything is served, with the path and the fault in the message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from inference_worker.model_loading import ModelLoadError, check_model_folder, load_variant
from tests.conftest import ROOT, settings_refusal, worker_env


@pytest.fixture
def copies(test_models, tmp_path):
    """Writable copies of the test model's two variants."""
    fp16 = tmp_path / "fp16"
    gptq = tmp_path / "gptq"
    shutil.copytree(test_models["fp16"], fp16)
    shutil.copytree(test_models["gptq-int4"], gptq)
    return fp16, gptq


def refused(path, *, quantized: bool) -> str:
    with pytest.raises(ModelLoadError) as error:
        check_model_folder(path, quantized=quantized)
    assert str(path) in str(error.value)
    return error.value.problem


def test_the_built_variants_pass(copies):
    fp16, gptq = copies
    assert check_model_folder(fp16, quantized=False)["model_type"] == "qwen2"
    assert check_model_folder(gptq, quantized=True)["quantization_config"]["bits"] == 4


def test_missing_folder(tmp_path):
    assert "does not exist" in refused(tmp_path / "nowhere", quantized=False)


def test_partial_folders(copies):
    fp16, gptq = copies
    (fp16 / "config.json").unlink()
    assert "config.json is missing" in refused(fp16, quantized=False)
    (gptq / "model.safetensors").unlink()
    assert "no weights" in refused(gptq, quantized=True)


def test_missing_tokenizer(copies):
    fp16, _ = copies
    (fp16 / "tokenizer.json").unlink()
    (fp16 / "tokenizer_config.json").unlink()
    assert "no tokenizer" in refused(fp16, quantized=False)


def test_corrupt_or_truncated_weights(copies):
    fp16, gptq = copies
    data = (fp16 / "model.safetensors").read_bytes()
    (fp16 / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "corrupt or partial" in refused(fp16, quantized=False)
    weights = bytearray((gptq / "model.safetensors").read_bytes())
    weights[-10] ^= 0xFF
    (gptq / "model.safetensors").write_bytes(bytes(weights))
    assert "sha256" in refused(gptq, quantized=True)


def test_unreadable_config(copies):
    fp16, _ = copies
    (fp16 / "config.json").write_text("{not json")
    assert "not readable JSON" in refused(fp16, quantized=False)


def test_variant_mismatch_both_ways(copies):
    fp16, gptq = copies
    assert "no GPTQ quantization_config" in refused(fp16, quantized=True)
    assert "checkpoint is quantized (gptq)" in refused(gptq, quantized=False)


def test_weights_that_fail_to_load_are_refused_without_a_build_info(copies):
    fp16, _ = copies
    (fp16 / "build-info.json").unlink()
    (fp16 / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError) as error:
        load_variant(variant="fp16", path=str(fp16), quantized=False, device="cpu")
    assert "loading failed" in error.value.problem


def test_worker_stops_at_start_naming_the_path_and_the_fault(copies, tmp_path):
    fp16, gptq = copies
    (gptq / "config.json").write_text(json.dumps({"model_type": "qwen2"}))  # GPTQ config gone
    result = subprocess.run(
        [sys.executable, "manage.py", "run_worker", "--name", "bad-worker"],
        cwd=ROOT,
        env=worker_env(MODEL_GPTQ_PATH=str(gptq), MODEL_FP16_PATH=str(fp16)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"worker not started: model at {gptq}" in result.stderr
    assert "no GPTQ quantization_config" in result.stderr


def test_the_4bit_model_computes_in_bf16_around_its_int4_layers_only_where_the_cpu_has_bf16():
    from inference_worker.model_loading import gptq_cpu_dtype

    assert gptq_cpu_dtype("auto", has_bf16=True) == "bfloat16"
    assert gptq_cpu_dtype("auto", has_bf16=False) == "float32"
    assert gptq_cpu_dtype("float32", has_bf16=True) == "float32"
    assert gptq_cpu_dtype("bfloat16", has_bf16=False) == "bfloat16"
    with pytest.raises(ValueError, match="GPTQ_CPU_DTYPE must be one of auto, bfloat16, float32, not 'fp8'"):
        gptq_cpu_dtype("fp8", has_bf16=True)


def test_on_cuda_a_checkpoint_computes_in_its_own_half_precision():
    """R1-Distill's checkpoints are bf16: on a GPU with bf16 they run in bf16 (fp16's narrower
    range can overflow where bf16 holds); fp16 and fp32 checkpoints, or a GPU without bf16, fp16."""
    import torch

    from inference_worker.model_loading import cuda_dtype

    assert cuda_dtype(torch.bfloat16, bf16_supported=True) == "bfloat16"
    assert cuda_dtype("bfloat16", bf16_supported=True) == "bfloat16"
    assert cuda_dtype("torch.bfloat16", bf16_supported=True) == "bfloat16"
    assert cuda_dtype(torch.bfloat16, bf16_supported=False) == "float16"
    assert cuda_dtype("float16", bf16_supported=True) == "float16"
    assert cuda_dtype("float32", bf16_supported=True) == "float16"
    assert cuda_dtype(None, bf16_supported=True) == "float16"


def test_a_gptq_cuda_kernel_not_known_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ValueError, match="GPTQ_CUDA_KERNEL must be one of auto, marlin, .*not 'cutlass'"):
        load_variant(variant="x", path=str(tmp_path), quantized=True, device="cpu", gptq_cuda_kernel="cutlass")


def test_a_wrong_gptq_cuda_kernel_stops_the_settings_with_its_name():
    assert "GPTQ_CUDA_KERNEL must be auto, marlin, exllama_v2, machete, triton or torch" in settings_refusal(
        GPTQ_CUDA_KERNEL="fastest"
    )


def test_a_wrong_gptq_cpu_dtype_stops_the_settings_with_its_name():
    assert "GPTQ_CPU_DTYPE must be auto, bfloat16 or float32" in settings_refusal(GPTQ_CPU_DTYPE="half")
