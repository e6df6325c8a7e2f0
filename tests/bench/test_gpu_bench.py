"""bench/gpu.py runs end to end on the CPU with a toy model (`--tiny`): the H200 script must not
first break on the GPU, where device time is scarce."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_every_cpu_variant_with_a_toy_model(tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/gpu.py",
            "--tiny",
            "--sessions",
            "1,3",
            "--prompt-tokens",
            "8",
            "--new-tokens",
            "4",
            "--variants",
            "dense,dense-padded,paged,paged-graphs,dense-eager,dense-cudnn,worker",
            "--sequential-requests",
            "1",
            "--json",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
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
        "worker (auto), 3 sessions",  # the largest count only: the engine process, as the worker runs it
    ]
    for row in report["rows"]:
        assert row["tokens"] == row["sessions"] * 4 or row["mode"].startswith("generate"), row
        assert row["tokens_per_s"] > 0 and not row.get("note"), row
