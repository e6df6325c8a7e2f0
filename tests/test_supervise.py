"""scripts/supervise.sh, which `make run` runs the worker under: a command that dies is started
again with a growing pause, and TERM stops the loop and the command with it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT

SUPERVISE = ROOT / "scripts" / "supervise.sh"


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_command_that_dies_is_started_again_after_1_then_2_seconds(tmp_path: Path):
    runs = tmp_path / "runs"
    log = tmp_path / "worker.log"
    supervisor = subprocess.Popen(
        [SUPERVISE, "worker", log, "--", "sh", "-c", f"echo run >>{runs}; echo dying; exit 3"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: runs.exists() and len(runs.read_text().splitlines()) >= 2, timeout=5)
        started = time.monotonic()
        wait_for(lambda: len(runs.read_text().splitlines()) >= 3, timeout=5)
        assert time.monotonic() - started > 1.5  # the second pause is 2 s
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(5)
    notices = supervisor.stderr.read()
    assert "worker exited with status 3; starting it again in 1 s" in notices
    assert "worker exited with status 3; starting it again in 2 s" in notices
    assert log.read_text().count("dying") >= 3  # the command's output goes to its log


def test_term_stops_the_running_command_and_the_loop(tmp_path: Path):
    pid_file = tmp_path / "pid"
    supervisor = subprocess.Popen(
        [SUPERVISE, "worker", tmp_path / "log", "--", "sh", "-c", f"echo $$ >{pid_file}; exec sleep 60"],
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    child = int(pid_file.read_text())
    assert alive(child)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(5) == 0
    wait_for(lambda: not alive(child), timeout=5)


def test_make_run_runs_the_worker_under_the_supervisor_and_ends_only_with_the_web_server():
    script = (ROOT / "scripts" / "run.sh").read_text()
    assert "scripts/supervise.sh worker var/log/worker.log -- $PY manage.py run_worker &" in script
    assert "wait -n $worker $web" in script
