"""bench/retrieval.py runs end to end at a small size: a fresh PostgreSQL database and an SQLite
file, generated articles beside the demo's, timed retrieval per kind of question."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_retrieval_bench_seeds_both_backends_and_times_each_kind_of_question():
    run = subprocess.run(
        [
            sys.executable,
            "bench/retrieval.py",
            "--articles",
            "30",
            "--vocabulary",
            "300",
            "--queries",
            "12",
            "--sqlite",
            "--database",
            "chatbot_retrieval_bench_test",
            "--json",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    reports = json.loads(run.stdout.strip().splitlines()[-1])["reports"]
    assert [r["backend"] for r in reports] == ["postgresql", "sqlite"]
    assert reports[0]["passages"] == reports[1]["passages"] > 60
    for report in reports:
        rows = {row["questions"]: row for row in report["rows"]}
        assert set(rows) == {"demo held-out", "from a passage", "random words", "all"}
        assert rows["all"]["n"] == 12 and rows["all"]["p95_ms"] > 0
        assert rows["from a passage"]["answered"] == 4  # a question made of a passage's words finds it
    subprocess.run(
        ["dropdb", "--if-exists", "-h", "127.0.0.1", "-U", "postgres", "chatbot_retrieval_bench_test"], check=True
    )
