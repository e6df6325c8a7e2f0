"""Which threads of a process run torch's CPU ops on several cores.

torch's CPU ops run in parallel on OpenMP (libgomp), and libgomp keeps a pool of helper threads
for each application thread that has run a parallel region. When the helpers of all the pools
together outnumber the CPUs, libgomp stops letting them spin between regions (its "throttled"
spin count): each of the few hundred small parallel regions of a decode step then wakes a
sleeping helper, and a second core makes a step slower instead of faster. On the 2-core CPU,
two threads in the batch loop were faster than one only where no other thread of the process had
run torch in parallel (docs/benchmarks.md, "Measurements behind the defaults").

So a process that runs a batch loop keeps the other threads' torch work on one thread, and runs
any parallel torch work of its own (a load, a plain `generate`) on a thread that ends with it:
a pool ends with its thread. For the same reason an idle batch loop's thread ends after a while
(`engine.dense.LOOP_IDLE_EXIT_S`), so an engine that stopped serving (the variant rolled back
from) does not keep its pool beside the serving one's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def on_own_thread(fn: Callable[[], T], *, threads: int, name: str = "torch-work") -> T:
    """Run `fn` with `threads` torch threads on a new thread, wait for it, and return its result
    (or raise its exception). The OpenMP pool it makes ends with that thread. The calling
    thread is left with one torch thread."""
    import torch

    outcome: dict[str, object] = {}

    def run() -> None:
        torch.set_num_threads(max(1, threads))
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    torch.set_num_threads(1)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def torch_work_threads() -> int:
    """Torch threads for a worker's work outside the batch loops (loading a model, the variant
    comparison): TORCH_THREADS, or one per CPU this process may run on."""
    from django.conf import settings

    return settings.TORCH_THREADS or cpus()
