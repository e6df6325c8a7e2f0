"""Shared bits of the benchmarks: percentiles and table printing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(settings_module: str = "chatbot.settings") -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GPTQMODEL_OFFLINE", "1")  # no CUTLASS download for gptqmodel's Machete kernel
    if not os.environ.get("SECRET_KEY"):
        # The demo's own key (var/secret_key, made once), as `make run` uses it.
        os.environ["SECRET_KEY"] = subprocess.check_output([str(ROOT / "scripts" / "secret_key.sh")], text=True)
    import django

    django.setup()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def throughput_row(mode: str, sessions: int, tokens: int, elapsed: float | None, ttfts: Sequence[float]) -> dict:
    """The fields every benchmark row has: tokens, tokens/s (nan without a time: a row that did
    not run) and time to first token p50/p95 in ms (nan without any)."""
    return {
        "mode": mode,
        "sessions": sessions,
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed if elapsed else float("nan"),
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p95_ms": percentile(ttfts, 95) * 1000,
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
