"""A reduced ("tiny" preset) build of the demo model, done once for this module: train,
quantize, save, reload with plain transformers, generate and evaluate on the CPU."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from inference_worker.demo_model import build as build_module  # noqa: E402
from inference_worker.demo_model.build import (  # noqa: E402
    BUILD_INFO_FILE,
    BuildReport,
    build_demo_model,
    part_status,
    read_build_info,
    sha256_file,
)
from inference_worker.demo_model.corpus import heldout_examples, load_corpus  # noqa: E402
from inference_worker.demo_model.evaluate import compare_variants, load_for_eval  # noqa: E402
from inference_worker.demo_model.tokenizer import encode_prompt  # noqa: E402
from inference_worker.demo_model.train import DEMO_TEMPERATURE, DEMO_TOP_P, PRESETS, train_model  # noqa: E402

SEED = 7
BITS = 4
GROUP_SIZE = 32


@dataclass
class TinyBuild:
    model_dir: Path
    fp16_dir: Path
    gptq_dir: Path
    report: BuildReport
    log: list[str]
    cwd: Path


def _build(tiny: TinyBuild | None = None, **overrides: object) -> BuildReport:
    assert tiny is not None
    kwargs = dict(
        model_dir=tiny.model_dir,
        fp16_dir=tiny.fp16_dir,
        gptq_dir=tiny.gptq_dir,
        force=False,
        preset="tiny",
        seed=SEED,
        bits=BITS,
        group_size=GROUP_SIZE,
        log=tiny.log.append,
    )
    kwargs.update(overrides)
    return build_demo_model(**kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyBuild]:
    root = tmp_path_factory.mktemp("demo-model")
    cwd = tmp_path_factory.mktemp("cwd")
    previous = Path.cwd()
    os.chdir(cwd)  # to see whether anything (gptqmodel's ./logs) lands in the working directory
    try:
        build = TinyBuild(
            model_dir=root,
            fp16_dir=root / "demo-fp16",
            gptq_dir=root / "demo-gptq-int4",
            report=None,  # type: ignore[arg-type]
            log=[],
            cwd=cwd,
        )
        build.report = _build(build)
        yield build
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def pairs(tiny: TinyBuild):
    return load_for_eval(tiny.fp16_dir, quantized=False), load_for_eval(tiny.gptq_dir, quantized=True)


def test_tiny_build_builds_every_part_and_logs_losses(tiny: TinyBuild) -> None:
    assert [p.name for p in tiny.report.parts] == ["tokenizer", "fp16", "gptq-int4"]
    assert all(p.built for p in tiny.report.parts)
    fp16 = tiny.report.part("fp16")
    assert fp16.detail["steps"] > 0 and fp16.detail["final_loss"] > 0
    assert any("loss" in line for line in tiny.log)
    json.dumps(tiny.report.to_dict())  # the command prints it as JSON


def test_a_reader_reports_its_copying_before_and_after_training(tiny: TinyBuild) -> None:
    """The reader's training reports how well its circuit copies random text and where its
    induction head lands, before and after (two steps here; docs/demo-model.md has the full
    build's figures)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny.fp16_dir)
    preset = replace(PRESETS["reader"], steps=2, batch_size=2, log_every=1)
    log: list[str] = []
    _model, report = train_model(tokenizer=tokenizer, corpus=load_corpus(), preset=preset, seed=SEED, log=log.append)
    assert report.copy_accuracy[0] > 0.95 and report.induction_landing[0] > 0.95
    assert 0 <= report.copy_accuracy[1] <= 1 and 0 <= report.induction_landing[1] <= 1
    assert any("induction head lands right on" in line for line in log)


def test_nothing_is_left_in_the_working_directory(tiny: TinyBuild) -> None:
    assert list(tiny.cwd.iterdir()) == []
    assert not any(p.name.endswith(".partial") for p in tiny.model_dir.iterdir())


def test_build_info_records_hashes_and_quantization(tiny: TinyBuild) -> None:
    fp16 = read_build_info(tiny.fp16_dir)
    gptq = read_build_info(tiny.gptq_dir)
    assert fp16["variant"] == "fp16" and gptq["variant"] == "gptq-int4"
    assert fp16["seed"] == gptq["seed"] == SEED and fp16["preset"] == "tiny"
    for directory, info in ((tiny.fp16_dir, fp16), (tiny.gptq_dir, gptq)):
        assert info["weights"] == ["model.safetensors"]
        assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(info["files"])
        for name, entry in info["files"].items():
            assert sha256_file(directory / name) == entry["sha256"]
            assert (directory / name).stat().st_size == entry["size"]
    assert fp16["quantization"] is None
    assert gptq["quantization"]["bits"] == BITS and gptq["quantization"]["group_size"] == GROUP_SIZE
    assert gptq["quantization"]["source_weights"] == {"model.safetensors": fp16["files"]["model.safetensors"]["sha256"]}
    assert (
        fp16["tokenizer_sha256"]
        == gptq["tokenizer_sha256"]
        == read_build_info(tiny.model_dir / "demo-tokenizer")["tokenizer_sha256"]
    )
    fp16_config = json.loads((tiny.fp16_dir / "config.json").read_text())
    gptq_config = json.loads((tiny.gptq_dir / "config.json").read_text())
    assert "quantization_config" not in fp16_config
    assert gptq_config["quantization_config"]["quant_method"] == "gptq"
    assert gptq_config["quantization_config"]["bits"] == BITS
    assert fp16_config["hidden_size"] % GROUP_SIZE == 0


def test_variants_share_tokenizer_files_and_generation_config(tiny: TinyBuild) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (tiny.fp16_dir / name).read_bytes() == (tiny.gptq_dir / name).read_bytes(), name
    generation = json.loads((tiny.gptq_dir / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny.fp16_dir)
    assert generation["do_sample"] is True
    # the demo model's own sampling, which the worker uses unless the settings override it
    assert (generation["temperature"], generation["top_p"]) == (DEMO_TEMPERATURE, DEMO_TOP_P)
    assert tokenizer.model_max_length == 640
    assert tokenizer.convert_tokens_to_ids("<handoff>") != tokenizer.unk_token_id
    assert generation["eos_token_id"] == tokenizer.eos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id


def test_fp16_weights_are_float16(tiny: TinyBuild) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny.fp16_dir, device_map="cpu")
    assert model.dtype == torch.float16
    assert model.config.vocab_size >= len(AutoTokenizer.from_pretrained(tiny.fp16_dir))


def test_gptq_checkpoint_loads_with_plain_transformers_and_generates(tiny: TinyBuild) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny.gptq_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny.gptq_dir, dtype=torch.bfloat16, device_map="cpu")
    assert model.config.quantization_config is not None
    quantized = [m for m in model.modules() if type(m).__name__ != "Linear" and hasattr(m, "qweight")]
    assert quantized, "no quantized linear layers after loading"
    prompt = encode_prompt(tokenizer, [{"role": "user", "content": "Where is my order?"}])
    output = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
    new_tokens = output[0, len(prompt) :]
    assert 0 < len(new_tokens) <= 8
    assert int(new_tokens.max()) < model.config.vocab_size


def test_second_build_keeps_complete_parts(tiny: TinyBuild) -> None:
    report = _build(tiny)
    assert [p.built for p in report.parts] == [False, False, False]
    assert all(p.reason == "complete" for p in report.parts)


def test_the_serving_loader_accepts_both_variants(tiny: TinyBuild) -> None:
    """The worker's folder check (another module) agrees with what the build writes."""
    model_loading = pytest.importorskip("inference_worker.model_loading")
    model_loading.check_model_folder(tiny.fp16_dir, quantized=False)
    model_loading.check_model_folder(tiny.gptq_dir, quantized=True)


def test_different_seed_or_group_size_is_not_complete(tiny: TinyBuild) -> None:
    complete, reason = part_status(directory=tiny.fp16_dir, variant="fp16", expect={"seed": SEED + 1})
    assert not complete and "seed" in reason
    complete, _ = part_status(directory=tiny.gptq_dir, variant="fp16", expect={})
    assert not complete


def test_a_changed_prompt_format_makes_the_parts_incomplete(tiny: TinyBuild, monkeypatch) -> None:
    """A model trained on one prompt format is not kept for another (the corpus hash covers the
    format the training text is written in, not only the data files)."""
    from chatbot.knowledge import text as kb

    before = build_module.corpus_sha256()
    assert part_status(directory=tiny.fp16_dir, variant="fp16", expect={"corpus_sha256": before})[0]
    monkeypatch.setattr(kb, "passage_line", lambda number, passage: f"({number}) {passage.text}")
    after = build_module.corpus_sha256()
    assert after != before
    complete, reason = part_status(directory=tiny.fp16_dir, variant="fp16", expect={"corpus_sha256": after})
    assert not complete and "corpus_sha256" in reason


def test_changed_weights_make_a_part_incomplete(tiny: TinyBuild, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny.gptq_dir, copy)
    assert part_status(directory=copy, variant="gptq-int4", expect={})[0]
    with open(copy / "model.safetensors", "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))
    complete, reason = part_status(directory=copy, variant="gptq-int4", expect={})
    assert not complete and "model.safetensors" in reason


def test_crash_while_quantizing_leaves_no_complete_looking_folder(
    tiny: TinyBuild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build-info.json is written last: a crash mid-part never yields a folder that has one."""

    def crash(**kwargs: object) -> None:
        (Path(kwargs["out_dir"]) / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
        (Path(kwargs["out_dir"]) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr("inference_worker.demo_model.quantize.quantize_gptq", crash)
    new_gptq = tmp_path / "gptq"
    with pytest.raises(RuntimeError, match="killed"):
        _build(tiny, gptq_dir=new_gptq)
    assert not (new_gptq / BUILD_INFO_FILE).exists()
    staging = new_gptq.parent / f".{new_gptq.name}.partial"
    assert not (staging / BUILD_INFO_FILE).exists()
    assert not part_status(directory=new_gptq, variant="gptq-int4", expect={})[0]
    assert build_module.part_status(directory=tiny.fp16_dir, variant="fp16", expect={})[0]


def test_compare_variants_on_the_tiny_model(pairs, tiny: TinyBuild) -> None:
    fp16, gptq = pairs
    extra = [[{"role": "user", "content": "hello, is anyone there?"}]]
    report = compare_variants(
        fp16=fp16, gptq=gptq, heldout=heldout_examples(), extra_prompts=extra, limit=6, max_new_tokens=12
    )
    json.dumps(report)
    assert report["examples"] == 6
    assert set(report["variants"]) == {"fp16", "gptq-int4"}
    for result in report["variants"].values():
        assert 0.0 <= result["accuracy"] <= 1.0
        assert result["examples"] == 6
        assert 0 < result["mean_generated_tokens"] <= 12
        assert result["tokens_per_second"] > 0
    heldout = report["comparison"]["heldout"]
    assert heldout["prompts"] == 6
    assert 0.0 <= heldout["greedy_token_agreement"] <= 1.0
    assert 0.0 <= heldout["logits_relative_error"] <= heldout["logits_relative_error_max"]
    assert report["comparison"]["extra"]["prompts"] == 1
    assert isinstance(report["passed"], bool)
    # the tiny model learns nothing useful, so the thresholds must fail it
    assert not report["passed"] and report["failures"]


def test_identical_variants_agree_fully(pairs) -> None:
    """Comparing a variant with itself: agreement 1, logits error 0 (batched, left-padded)."""
    fp16, _ = pairs
    report = compare_variants(fp16=fp16, gptq=fp16, heldout=heldout_examples(), limit=5, max_new_tokens=10)
    assert report["comparison"]["heldout"]["greedy_token_agreement"] == 1.0
    assert report["comparison"]["heldout"]["logits_relative_error"] == 0.0


def test_management_commands_build_and_evaluate(tiny: TinyBuild, settings) -> None:
    """The commands read the settings' paths; evaluate_models --json prints one JSON object and
    exits non-zero when the thresholds fail (they do for the tiny model)."""
    from io import StringIO

    from django.core.management import call_command

    settings.MODEL_DIR = tiny.model_dir
    settings.MODEL_VARIANTS = {
        "fp16": {"path": str(tiny.fp16_dir), "quantized": False},
        "gptq-int4": {"path": str(tiny.gptq_dir), "quantized": True},
    }
    settings.DEMO_MODEL_SEED, settings.GPTQ_BITS, settings.GPTQ_GROUP_SIZE = SEED, BITS, GROUP_SIZE
    out = StringIO()
    call_command("build_demo_model", "--preset", "tiny", stdout=out)
    assert "kept" in out.getvalue()
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("evaluate_models", "--json", "--limit", "3", stdout=out)
    assert exited.value.code == 1
    report = json.loads(out.getvalue())
    assert report["examples"] == 3 and report["passed"] is False
