"""bench/path.sh, the whole path's benchmark, runs end to end: a fresh database, web server,
worker and engine processes, the warm-up, then bench/load.py's measured customers."""

import json
import os
import subprocess

from tests.conftest import ROOT, free_port


def test_path_bench_starts_the_product_measures_its_customers_and_stops_it(test_models, tmp_path):
    env = dict(
        os.environ,
        BENCH_DATABASE="chatbot_bench_test",
        BENCH_REDIS_DB="12",
        BENCH_PORT=str(free_port()),
        BENCH_LOGS=str(tmp_path),
        BENCH_WARMUP="1",
    )
    run = subprocess.run(
        ["bench/path.sh", "--customers", "2", "--messages", "2", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr + (tmp_path / "worker.log").read_text()[-3000:]
    level = json.loads(run.stdout[run.stdout.index("{") :])["levels"][0]
    assert (level["customers"], level["answers"], level["errors"]) == (2, 4, 0), level
    assert level["path_overhead_p95_ms"] > 0  # measured from the stored generations of this run
    # The first answer text comes after the first streamed output (the reasoning's) and before the end.
    assert level["first_p50_ms"] < level["answer_p50_ms"] <= level["done_p50_ms"], level
    # Nothing is left running: neither the web server nor the worker (nor its engine processes).
    for pattern in (f"port {env['BENCH_PORT']}", "run_worker --name bench-"):
        assert subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True).returncode == 1, pattern
