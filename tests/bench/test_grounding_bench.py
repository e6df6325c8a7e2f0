"""bench/grounding.py runs end to end on the test model: each question's prompt with and without
the help center's passages, timed to the first token side by side."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_grounding_bench_times_plain_and_grounded_prompts(test_models):
    run = subprocess.run(
        [sys.executable, "bench/grounding.py", "--requests", "4", "--rounds", "1", "--variants", "fp16", "--json"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    figures = report["variants"]["fp16"]
    # The passages make the prompt longer; both kinds were timed.
    assert figures["grounded"]["prompt_tokens_mean"] > figures["plain"]["prompt_tokens_mean"] + 30
    assert figures["plain"]["ttft_ms_p50"] > 0 and figures["grounded"]["ttft_ms_p50"] > 0
    assert figures["ratio_p50"] > 0
