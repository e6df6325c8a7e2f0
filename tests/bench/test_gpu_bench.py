"""bench/gpu.py runs end to end on the CPU with a toy model (`--tiny`): the H200 script must not
first break on the GPU, where device time is scarce."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_gpu_bench(*arguments: str) -> dict:
    """bench/gpu.py with these arguments and `--json`, in a process of its own: its report."""
    result = subprocess.run(
        [sys.executable, "bench/gpu.py", *arguments, "--sequential-requests", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_gpu_bench_runs_every_cpu_variant_with_a_toy_model(tmp_path):
    out = tmp_path / "report.json"
    report = run_gpu_bench(
        *("--tiny", "--sessions", "1,3", "--prompt-tokens", "8", "--new-tokens", "4"),
        *("--variants", "dense,dense-padded,paged,paged-graphs,dense-eager,dense-cudnn,worker", "--out", str(out)),
    )
    assert report == json.loads(out.read_text())
    modes = [row["mode"] for row in report["rows"]]
    # On a CPU there are no CUDA graphs and no cuDNN: those variants are left out, and dense
    # runs its slot cache eagerly; `worker` saves the model and serves it from an engine process.
    assert modes == [
        "generate, one at a time",
        "engine (dense), 1 sessions",
        "engine (dense), 3 sessions",
        "engine (dense-padded), 1 sessions",
        "engine (dense-padded), 3 sessions",
        "engine (paged), 1 sessions",
        "engine (paged), 3 sessions",
        # the smallest and largest counts: the engine process, as the worker runs it
        "worker (auto, unquantized), 1 sessions",
        "worker (auto, unquantized), 3 sessions",
    ]
    for row in report["rows"]:
        assert row["tokens"] == row["sessions"] * 4 or row["mode"].startswith("generate"), row
        assert row["tokens_per_s"] > 0, row
        if row["mode"].startswith("worker"):  # what the engine process loaded, and how long it took
            assert re.fullmatch(r"torch\.float32, loaded in \d+ s", row["note"]), row
        else:
            assert not row.get("note"), row


def test_the_4bit_rows_serve_a_gptq_checkpoint_through_the_workers_loading_code_and_name_its_kernel():
    """`worker-gptq-KERNEL`: the model rounded to 4 bits and saved as a GPTQ checkpoint, served by
    the worker's engine process as its 4-bit variant; the note names the kernel class that ran
    (on a CPU gptqmodel's `TorchAtenLinear`, whatever the CUDA kernel asked for)."""
    report = run_gpu_bench(
        *("--tiny", "--sessions", "1,2", "--prompt-tokens", "8", "--new-tokens", "4"),
        *("--variants", "worker-gptq-triton"),
    )
    rows = report["rows"][1:]
    assert [row["mode"] for row in rows] == [
        "worker (auto, 4-bit GPTQ, kernel triton), 1 sessions",
        "worker (auto, 4-bit GPTQ, kernel triton), 2 sessions",
    ]
    for row in rows:
        assert row["tokens"] == row["sessions"] * 4, row
        assert re.fullmatch(r"int4 layers \(TorchAtenLinear\) in bf16, the rest in \w+, loaded in \d+ s", row["note"])


def test_the_gptq_checkpoint_the_benchmark_writes_computes_with_its_rounded_weights(tmp_path):
    """`save_gptq_rtn`'s packing, read back by gptqmodel through the worker's `load_variant`:
    the loaded model's logits are those of the model with every decoder linear layer replaced
    by its rounded weight (`rtn_weight`), to bf16's rounding, and not the unquantized model's."""
    import copy

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from bench import gpu
    from inference_worker.model_loading import load_variant

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**gpu.TINY)).to(torch.bfloat16).eval()
    folder = gpu.save_gptq_rtn(model, str(tmp_path), group_size=32)
    loaded = load_variant(variant="t", path=folder, quantized=True, device="cpu", gptq_cpu_dtype_setting="float32")
    rounded = copy.deepcopy(model).float()
    for name, module in rounded.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}.":
            module.weight.data = gpu.rtn_weight(module.weight, 32)
    ids = torch.randint(10, 1000, (2, 12))
    with torch.no_grad():
        served, expected, unquantized = (m(ids).logits.float() for m in (loaded.model, rounded, model.float()))

    def error(a, b):
        return float((a - b).norm() / b.norm())

    assert error(served, expected) < 0.02
    assert error(served, unquantized) > 0.05  # the 4-bit rounding is there: the check can tell


def test_gpu_bench_keeps_the_1_5b_attention_in_one_layer_with_geometry_attention():
    """`--geometry attention`: the 1.5B model's attention (12 query and 2 key-value heads of
    128) in one layer, for measuring on a CPU how each backend's attention grows."""
    report = run_gpu_bench(
        *("--geometry", "attention", "--sessions", "2", "--prompt-tokens", "8", "--new-tokens", "3"),
        *("--variants", "dense,paged"),
    )
    assert report["geometry"] == "attention"
    assert report["model"] == {
        "hidden_size": 1536,
        "num_hidden_layers": 1,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "head_dim": 128,
    }
    assert [row["mode"] for row in report["rows"]] == [
        "generate, one at a time",
        "engine (dense), 2 sessions",
        "engine (paged), 2 sessions",
    ]
    assert all(row["tokens"] == 6 for row in report["rows"][1:])


def test_a_dense_row_notes_whether_its_cuda_graphs_stayed_on():
    """What a `dense` row says of its CUDA graphs, read from the engine's own slot runner (on
    the CPU the runner is told it is on CUDA; nothing runs on it while it is read)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from bench import gpu
    from inference_worker.engine.engine import BatchingEngine

    model = Qwen2ForCausalLM(Qwen2Config(**gpu.TINY)).eval()
    generation = GenerationConfig(do_sample=False, max_new_tokens=2, eos_token_id=-1, pad_token_id=0)
    backend, engine_args = gpu.VARIANTS["dense"]
    engine = BatchingEngine(
        model=model,
        tokenizer=None,
        variant="bench",
        max_batch=2,
        max_new_tokens=2,
        context_tokens=16,
        generation_config=generation,
        backend=backend,
        **engine_args,
    ).start()
    try:
        runner = engine._manager.runner
        assert gpu.graphs_note(engine, engine_args) == ""  # on the CPU there are none to speak of
        runner.device = torch.device("cuda")
        runner.graphs, runner.graphs_captured = True, 5
        assert gpu.graphs_note(engine, engine_args) == "5 graphs"
        runner.graphs = False
        assert gpu.graphs_note(engine, engine_args) == "graphs turned off, ran eagerly (see the log)"
        assert gpu.graphs_note(engine, gpu.VARIANTS["dense-eager"][1]) == ""
    finally:
        engine.stop()


def test_the_long_reasoning_rows_close_every_reasoning_at_its_budget_and_time_the_first_answer_token():
    """`--variants reasoning`: each request reasons N tokens (the engine closes it at N, as the
    model itself would) or is cut at the budget, then answers; rows give the first answer token."""
    report = run_gpu_bench(
        *("--tiny", "--sessions", "1,3", "--prompt-tokens", "8", "--variants", "reasoning"),
        *("--reasoning-tokens", "16", "--answer-tokens", "4", "--reasoning-budget", "6"),
    )
    rows = report["rows"][1:]
    assert [row["mode"] for row in rows] == [
        "reasoning (reasons 16), 1 sessions",
        "reasoning (budget 6 of 16), 1 sessions",
        "reasoning (reasons 16), 3 sessions",
        "reasoning (budget 6 of 16), 3 sessions",
    ]
    for row, budget in zip(rows, (16, 6, 16, 6), strict=True):
        assert row["tokens"] == row["sessions"] * (budget + 3 + 4)  # reasoning, the closing, the answer
        assert row["note"] == f"{row['sessions']}/{row['sessions']} closed at {budget}"
        assert row["ttft_p50_ms"] <= row["answer_p50_ms"]
