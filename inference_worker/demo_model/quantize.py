"""GPTQ 4-bit quantization of the FP16 demo model with ``gptqmodel``, on the CPU.

The checkpoint is written in the standard GPTQ format (``quantization_config`` with
``quant_method: gptq`` in config.json), so plain ``transformers`` loads it:
``AutoModelForCausalLM.from_pretrained(gptq_dir, dtype=torch.bfloat16, device_map="cpu")``.

gptqmodel has side effects this module undoes (each seen when the build first ran it):
importing it sets ``PYTORCH_ALLOC_CONF`` (restored after import); ``save()`` rewrites
``tokenizer_config.json`` and ``generation_config.json`` (replaced by the FP16 variant's files, so
both variants tokenize and sample identically) and writes ``./logs/`` into the working directory
(we run it from a temporary directory). Its console chatter goes to stderr, not stdout.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Files that must be byte-identical between the FP16 and GPTQ variants.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# Tokenizer files gptqmodel/transformers may add that the FP16 variant does not have.
_STRAY_TOKENIZER_FILES = ("special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt")
_ENV_SET_BY_GPTQMODEL = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")


@dataclass(frozen=True)
class QuantizeReport:
    seconds: float
    bits: int
    group_size: int
    calibration_samples: int


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 to descriptor 2 for a while.

    gptqmodel prints banners, progress bars and its config to stdout (through handlers that hold
    the stream, so ``contextlib.redirect_stdout`` misses them); commands whose stdout is their
    output (``evaluate_models --json``) keep it clean this way.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _import_gptqmodel():  # noqa: ANN202 - returns the module's two classes
    """Import lazily: slow (seconds), and it configures the process at import time."""
    # On a 2-core machine gptqmodel's default pool asks for more CPU workers than its parent pool
    # has and refuses to start.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    saved = {name: os.environ.get(name) for name in _ENV_SET_BY_GPTQMODEL}
    try:
        from gptqmodel import GPTQModel, QuantizeConfig
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return GPTQModel, QuantizeConfig


def quantize_gptq(
    *,
    fp16_dir: Path,
    out_dir: Path,
    bits: int,
    group_size: int,
    calibration: Sequence[str],
    log: Callable[[str], None],
) -> QuantizeReport:
    """Quantize the model in ``fp16_dir`` into ``out_dir`` (created; must not exist or be empty).

    ``calibration`` are full chat-formatted conversations, so GPTQ's Hessians come from the
    activations the served model actually sees.
    """
    fp16_dir = Path(fp16_dir).resolve()
    out_dir = Path(out_dir).resolve()
    started = time.monotonic()
    with stdout_to_stderr():
        GPTQModel, QuantizeConfig = _import_gptqmodel()
    log(f"  gptqmodel imported ({time.monotonic() - started:.1f} s)")
    config = QuantizeConfig(
        bits=bits,
        group_size=group_size,
        desc_act=False,  # keeps the plain GPTQ layout every CPU kernel reads
        sym=True,
        # The default CPU packer compiles a C++ extension on first use, which takes longer than
        # the whole quantization; the original pure-torch packer is quick on a model this size.
        pack_impl="original",
        # Offloading finished layers to disk buys nothing for a few-MB model.
        offload_to_disk=False,
    )
    with tempfile.TemporaryDirectory(prefix="gptq-run-") as scratch, stdout_to_stderr():
        with _working_directory(Path(scratch)):
            model = GPTQModel.load(str(fp16_dir), config, device="cpu")
            model.quantize(list(calibration), batch_size=8)
            model.save(str(out_dir))
            del model
    _restore_fp16_companions(fp16_dir=fp16_dir, out_dir=out_dir)
    seconds = time.monotonic() - started
    return QuantizeReport(seconds=seconds, bits=bits, group_size=group_size, calibration_samples=len(calibration))


def _restore_fp16_companions(*, fp16_dir: Path, out_dir: Path) -> None:
    for name in _STRAY_TOKENIZER_FILES:
        if (out_dir / name).exists() and not (fp16_dir / name).exists():
            (out_dir / name).unlink()
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        if (fp16_dir / name).exists():
            shutil.copyfile(fp16_dir / name, out_dir / name)
