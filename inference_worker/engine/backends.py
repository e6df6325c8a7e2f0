"""Which continuous-batching backend an engine runs (ENGINE_BACKEND). Imports no torch."""

from __future__ import annotations

BACKENDS = ("dense", "paged")
DEFAULT_BACKEND = "dense"


def resolve_backend(setting: str) -> str:
    """The backend that ENGINE_BACKEND names: "dense", "paged", or "auto", which is our dense
    backend on every device. Raises ValueError for anything else.

    Why dense: transformers' paged batching, as the loaded models run it (SDPA attention; its
    block-table decode path, where each row reads only its own blocks, needs flash attention),
    attends every token of a step over the keys of every request in the batch, under a mask, so
    a step's work grows with the square of the sessions. The dense backend's rows attend over
    their own keys only; on CUDA it keeps a cache slot per request and replays its decode steps
    from CUDA graphs. The paged backend stays selectable. The measurements on the CPU and on a
    GPU are in docs/benchmarks.md."""
    backend = DEFAULT_BACKEND if setting == "auto" else setting
    if backend not in BACKENDS:
        raise ValueError(f"unknown engine backend {setting!r}: 'auto', 'dense' or 'paged'")
    return backend
