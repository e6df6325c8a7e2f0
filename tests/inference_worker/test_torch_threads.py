"""Torch work on a thread of its own: the OpenMP pool it makes ends with that thread, so the
batch loop's pool stays the only one (inference_worker/torch_threads.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inference_worker.torch_threads import on_own_thread
from tests.conftest import ROOT

# In a fresh process: the pytest process has run torch on its main thread already.
SCRIPT = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import torch
from inference_worker.torch_threads import on_own_thread

def os_threads():
    return len(os.listdir("/proc/self/task"))

def parallel_work():
    x = torch.randn(2_000_000)
    for _ in range(5):
        x = x.exp().log()  # elementwise: at::parallel_for on OpenMP
    return torch.get_num_threads()

torch.set_num_threads(1)
parallel_work()
before = os_threads()
inside = on_own_thread(parallel_work, threads=2)
# The pool's helpers are told to exit when their thread ends; they leave a moment later.
deadline = time.monotonic() + 10
while os_threads() > before and time.monotonic() < deadline:
    time.sleep(0.01)
after = os_threads()
caller = torch.get_num_threads()
torch.set_num_threads(2)  # the same work on this (long-lived) thread keeps its pool
parallel_work()
print(json.dumps({{"before": before, "inside": inside, "after": after, "caller": caller, "kept": os_threads()}}))
"""


def test_the_pool_ends_with_its_thread():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT))], capture_output=True, text=True, timeout=120, check=True
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["inside"] == 2  # the work ran with the threads asked for
    assert counts["after"] == counts["before"]  # its thread and that thread's OpenMP helper are gone
    assert counts["caller"] == 1  # the caller is left on one thread
    assert counts["kept"] > counts["before"]  # control: run here, the helper stays


def test_returns_the_value_and_raises_the_error():
    assert on_own_thread(lambda: 42, threads=1) == 42

    def fails():
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        on_own_thread(fails, threads=1)
