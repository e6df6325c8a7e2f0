"""Building the demo model end to end: tokenizer, FP16 variant, GPTQ 4-bit variant.

Each part is built in a staging folder next to its destination (``.<name>.partial``), its
``build-info.json`` is written last, and the folder is then renamed into place: a crash leaves
either the previous complete folder or none, never a folder that looks complete. A part is
skipped when its folder is complete for the requested parameters (see ``part_status``), unless
``force``; a rebuilt tokenizer forces a new FP16 model, and a new FP16 model a new GPTQ one.

``build-info.json`` (format 1), in the tokenizer folder and in each variant folder::

    {
      "format": 1,
      "variant": "fp16" | "gptq-int4" | "tokenizer",
      "preset": "full" | "tiny",
      "seed": 1234,
      "created_at": "2026-11-28T18:30:00+00:00",
      "corpus_sha256": "<sha256 over the corpus data files and the training text format>",
      "tokenizer_sha256": "<sha256 over the tokenizer files' names and hashes>",
      "files": {"model.safetensors": {"sha256": "<hex>", "size": 8010000},
                "tokenizer.json": {"sha256": "<hex>", "size": 86000}, ...},
      "weights": ["model.safetensors"],                       # [] for the tokenizer
      "model": {"architecture": "Qwen2ForCausalLM", "hidden_size": 256, "num_layers": 4,
                "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 768,
                "vocab_size": 1664, "parameters": 4000000},     # null for the tokenizer
      "quantization": null | {"method": "gptq", "bits": 4, "group_size": 32,
                              "source_weights": {"model.safetensors": "<fp16 sha256>"}},
      "training": null | {"steps": 320, "final_loss": 0.01, "seconds": 160.0}
    }

``files`` lists every weight and tokenizer file with its sha256 and size. A loader should check:
``config.json`` exists, each file in ``files`` exists with that size and sha256, ``weights`` is
not empty, and ``config.json`` has a ``quantization_config`` iff the variant is ``gptq-int4``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BUILD_INFO_FILE = "build-info.json"
BUILD_INFO_FORMAT = 1
TOKENIZER_DIR_NAME = "demo-tokenizer"
VARIANT_FP16 = "fp16"
VARIANT_GPTQ = "gptq-int4"
VARIANT_TOKENIZER = "tokenizer"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class PartResult:
    name: str
    path: str
    built: bool  # False: an existing complete folder was kept
    reason: str  # why it was (re)built or kept
    seconds: float = 0.0
    detail: dict[str, object] = field(default_factory=dict)


@dataclass
class BuildReport:
    preset: str
    seed: int
    seconds: float
    parts: list[PartResult]

    def part(self, name: str) -> PartResult:
        return next(p for p in self.parts if p.name == name)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --- build-info helpers (also usable by a loader) --------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_hashes(directory: Path) -> dict[str, str]:
    return {
        p.name: sha256_file(p)
        for p in sorted(Path(directory).iterdir())
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    }


def tokenizer_sha256(directory: Path) -> str:
    """One hash for the tokenizer files of a folder (names and contents)."""
    from inference_worker.demo_model.quantize import TOKENIZER_FILES

    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (Path(directory) / name).exists():
            digest.update(f"{name}:{sha256_file(Path(directory) / name)}\n".encode())
    return digest.hexdigest()


def file_entries(directory: Path) -> dict[str, dict[str, object]]:
    """``files`` of build-info.json: weight and tokenizer files with sha256 and size."""
    from inference_worker.demo_model.quantize import TOKENIZER_FILES

    directory = Path(directory)
    names = [*weight_hashes(directory), *(n for n in TOKENIZER_FILES if (directory / n).exists())]
    return {
        name: {"sha256": sha256_file(directory / name), "size": (directory / name).stat().st_size} for name in names
    }


def corpus_sha256() -> str:
    """Over the corpus data files and the text format the model is trained on (a grounded prompt
    and a completion, as the product writes them): a built model whose prompt format changed
    since (``chatbot.knowledge.text.passage_line``, say) is built again, not served a prompt it
    never saw."""
    from chatbot.knowledge import text as kb
    from inference_worker.demo_model.corpus import DATA_DIR, assistant_completion

    digest = hashlib.sha256()
    for path in sorted(DATA_DIR.glob("*.json")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    sample = kb.Passage("article", "Article", "anchor", "Heading", "Text 1.")
    digest.update(kb.grounded_content("Question?", [sample]).encode())
    digest.update(kb.grounded_content("Question?", []).encode())
    digest.update(assistant_completion(reasoning="Reasoning.", reply="Reply. [1]", handoff="reason").encode())
    return digest.hexdigest()


def read_build_info(directory: Path) -> dict[str, object] | None:
    try:
        return json.loads((Path(directory) / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def part_status(*, directory: Path, variant: str, expect: dict[str, object]) -> tuple[bool, str]:
    """(complete, reason): complete iff ``build-info.json`` is there, of this variant, with the
    ``expect``-ed values (preset, seed, corpus, …), and every file it lists has its hash."""
    directory = Path(directory)
    info = read_build_info(directory)
    if info is None:
        return False, "missing or incomplete (no build-info.json)"
    if info.get("format") != BUILD_INFO_FORMAT or info.get("variant") != variant:
        return False, "build-info.json of another format or variant"
    for key, value in expect.items():
        if info.get(key) != value:
            return False, f"built with {key}={info.get(key)!r}, wanted {value!r}"
    for name, entry in (info.get("files") or {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            return False, f"{name} missing or changed"
    if variant != VARIANT_TOKENIZER:
        weights = info.get("weights") or []
        if not (directory / "config.json").exists() or not weights or not set(weights) <= set(info.get("files") or {}):
            return False, "config or weights missing"
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        if ("quantization_config" in config) != (variant == VARIANT_GPTQ):
            return False, "quantization_config does not match the variant"
    return True, "complete"


def _write_build_info(directory: Path, info: dict[str, object]) -> None:
    info = {
        "format": BUILD_INFO_FORMAT,
        **info,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (directory / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _staging_dir(destination: Path) -> Path:
    staging = destination.parent / f".{destination.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # leftover of a crashed build
    destination.parent.mkdir(parents=True, exist_ok=True)
    return staging


def _publish(staging: Path, destination: Path) -> None:
    """Swap the finished staging folder into place (build-info.json is already in it)."""
    # transformers writes safetensors files 0600; a worker running as another user must read them.
    umask = os.umask(0)
    os.umask(umask)
    for path in staging.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
    if destination.exists():
        shutil.rmtree(destination)
    staging.rename(destination)


# --- the build --------------------------------------------------------------------------------


def build_demo_model(
    *,
    model_dir: Path,
    fp16_dir: Path,
    gptq_dir: Path,
    force: bool,
    preset: str = "full",
    seed: int,
    bits: int,
    group_size: int,
    log: Callable[[str], None],
) -> BuildReport:
    """Build what is missing (everything with ``force``); see the module docstring."""
    # Heavy imports here so importing this module (e.g. for the loader helpers) stays cheap.
    from transformers import AutoTokenizer

    from inference_worker.demo_model.corpus import (
        calibration_texts,
        load_corpus,
        tokenizer_training_texts,
    )
    from inference_worker.demo_model.quantize import quantize_gptq
    from inference_worker.demo_model.tokenizer import EOS_TOKEN, render_prompt, train_tokenizer
    from inference_worker.demo_model.train import (
        preset_by_name,
        save_fp16,
        train_model,
    )

    started = time.monotonic()
    model_preset = preset_by_name(preset)
    _check_group_size(hidden=model_preset.hidden_size, inter=model_preset.intermediate_size, group_size=group_size)
    model_dir, fp16_dir, gptq_dir = Path(model_dir), Path(fp16_dir), Path(gptq_dir)
    tokenizer_dir = model_dir / TOKENIZER_DIR_NAME
    corpus = load_corpus()
    corpus_hash = corpus_sha256()
    common = {"preset": preset, "seed": seed, "corpus_sha256": corpus_hash}
    parts: list[PartResult] = []

    # 1. Tokenizer --------------------------------------------------------------------------
    log(f"[1/3] tokenizer -> {tokenizer_dir}")
    complete, reason = part_status(directory=tokenizer_dir, variant=VARIANT_TOKENIZER, expect=common)
    rebuild = force or not complete
    part_started = time.monotonic()
    if rebuild:
        reason = "forced" if force else reason
        log(f"  building ({reason})")
        staging = _staging_dir(tokenizer_dir)
        tokenizer = train_tokenizer(
            texts=tokenizer_training_texts(corpus=corpus),
            vocab_size=model_preset.tokenizer_vocab_size,
        )
        tokenizer.save_pretrained(staging)
        _write_build_info(
            staging,
            {
                "variant": VARIANT_TOKENIZER,
                **common,
                "tokenizer_sha256": tokenizer_sha256(staging),
                "files": file_entries(staging),
                "weights": [],
                "model": None,
                "quantization": None,
                "training": None,
                "vocab_size": len(tokenizer),
            },
        )
        _publish(staging, tokenizer_dir)
    else:
        log("  complete, kept")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    parts.append(
        PartResult(
            name=VARIANT_TOKENIZER,
            path=str(tokenizer_dir),
            built=rebuild,
            reason=reason,
            seconds=time.monotonic() - part_started,
            detail={"vocab_size": len(tokenizer)},
        )
    )
    log(f"  vocab {len(tokenizer)} tokens ({parts[-1].seconds:.1f} s)")

    # 2. FP16 model ------------------------------------------------------------------------------
    log(f"[2/3] fp16 model -> {fp16_dir}")
    complete, reason = part_status(
        directory=fp16_dir,
        variant=VARIANT_FP16,
        expect={**common, "tokenizer_sha256": tokenizer_sha256(tokenizer_dir)},
    )
    rebuild_fp16 = force or rebuild or not complete
    part_started = time.monotonic()
    detail: dict[str, object] = {}
    if rebuild_fp16:
        reason = "forced" if force else ("new tokenizer" if rebuild else reason)
        log(f"  training ({reason})")
        staging = _staging_dir(fp16_dir)
        model, train_report = train_model(tokenizer=tokenizer, corpus=corpus, preset=model_preset, seed=seed, log=log)
        save_fp16(model=model, tokenizer=tokenizer, directory=staging)
        _copy_tokenizer_files(source=tokenizer_dir, destination=staging)
        detail = {
            "parameters": train_report.parameters,
            "steps": train_report.steps,
            "final_loss": train_report.final_loss,
            "train_seconds": round(train_report.seconds, 1),
            "losses": [list(pair) for pair in train_report.losses],
            "copy_accuracy": train_report.copy_accuracy,
            "induction_landing": train_report.induction_landing,
        }
        _write_build_info(
            staging,
            {
                "variant": VARIANT_FP16,
                **common,
                "tokenizer_sha256": tokenizer_sha256(staging),
                "files": file_entries(staging),
                "weights": sorted(weight_hashes(staging)),
                "model": _model_summary(model.config, parameters=train_report.parameters),
                "quantization": None,
                "training": {
                    "steps": train_report.steps,
                    "final_loss": round(train_report.final_loss, 6),
                    "seconds": round(train_report.seconds, 1),
                    "copy_accuracy": train_report.copy_accuracy and [round(x, 4) for x in train_report.copy_accuracy],
                    "induction_landing": train_report.induction_landing
                    and [round(x, 4) for x in train_report.induction_landing],
                },
            },
        )
        del model
        _publish(staging, fp16_dir)
    else:
        log("  complete, kept")
    parts.append(
        PartResult(
            name=VARIANT_FP16,
            path=str(fp16_dir),
            built=rebuild_fp16,
            reason=reason,
            seconds=time.monotonic() - part_started,
            detail=detail,
        )
    )
    log(f"  fp16 done ({parts[-1].seconds:.1f} s)")

    # 3. GPTQ model ------------------------------------------------------------------------------
    log(f"[3/3] gptq {bits}-bit (group {group_size}) -> {gptq_dir}")
    fp16_info = read_build_info(fp16_dir) or {}
    quantization = {
        "method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "source_weights": {
            name: entry["sha256"]
            for name, entry in (fp16_info.get("files") or {}).items()
            if name in (fp16_info.get("weights") or [])
        },
    }
    complete, reason = part_status(
        directory=gptq_dir, variant=VARIANT_GPTQ, expect={**common, "quantization": quantization}
    )
    rebuild_gptq = force or rebuild_fp16 or not complete
    part_started = time.monotonic()
    detail = {}
    if rebuild_gptq:
        reason = "forced" if force else ("new fp16 model" if rebuild_fp16 else reason)
        log(f"  quantizing ({reason})")
        staging = _staging_dir(gptq_dir)
        calibration = calibration_texts(
            corpus=corpus,
            count=model_preset.calibration_samples,
            seed=seed,
            render=lambda messages: render_prompt(tokenizer, messages),
            end_token=EOS_TOKEN,
        )
        quantize_report = quantize_gptq(
            fp16_dir=fp16_dir,
            out_dir=staging,
            bits=bits,
            group_size=group_size,
            calibration=calibration,
            log=log,
        )
        detail = {
            "quantize_seconds": round(quantize_report.seconds, 1),
            "calibration_samples": quantize_report.calibration_samples,
        }
        _write_build_info(
            staging,
            {
                "variant": VARIANT_GPTQ,
                **common,
                "tokenizer_sha256": tokenizer_sha256(staging),
                "files": file_entries(staging),
                "weights": sorted(weight_hashes(staging)),
                "model": fp16_info.get("model"),
                "quantization": quantization,
                "training": fp16_info.get("training"),
            },
        )
        _publish(staging, gptq_dir)
    else:
        log("  complete, kept")
    parts.append(
        PartResult(
            name=VARIANT_GPTQ,
            path=str(gptq_dir),
            built=rebuild_gptq,
            reason=reason,
            seconds=time.monotonic() - part_started,
            detail=detail,
        )
    )
    log(f"  gptq done ({parts[-1].seconds:.1f} s)")
    total = time.monotonic() - started
    log(f"demo model ready in {total:.1f} s")
    return BuildReport(preset=preset, seed=seed, seconds=total, parts=parts)


def _copy_tokenizer_files(*, source: Path, destination: Path) -> None:
    """Byte-identical tokenizer files in every part (a reloaded tokenizer may save them
    slightly differently, which would make the parts look inconsistent)."""
    from inference_worker.demo_model.quantize import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, destination / name)


def _check_group_size(*, hidden: int, inter: int, group_size: int) -> None:
    # GPTQ groups run along each linear layer's input dimension.
    if group_size > 0 and (hidden % group_size or inter % group_size):
        raise ValueError(f"group size {group_size} must divide hidden size {hidden} and intermediate size {inter}")


def _model_summary(config: object, *, parameters: int) -> dict[str, object]:
    return {
        "architecture": "Qwen2ForCausalLM",
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "num_kv_heads": config.num_key_value_heads,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "parameters": parameters,
    }
