"""The statistics the rollout guard decides on: a one-sided two-proportion z-test (pure Python,
no database)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ProportionTest:
    z: float
    # One-sided: the chance of a gap at least this large in the candidate's disfavour if the two
    # variants were in truth the same.
    p_value: float


def two_proportion_test(
    *, candidate_hits: int, candidate_n: int, baseline_hits: int, baseline_n: int
) -> ProportionTest:
    """Is the candidate's rate of a bad outcome higher than the baseline's? The pooled z-test:
    z = (p_c - p_b) / sqrt(p (1 - p) (1/n_c + 1/n_b)), p the pooled rate; the p-value is the
    upper tail of the normal distribution. With no data, or no spread (both all 0 or all 1),
    there is no evidence: z 0, p-value 1."""
    if candidate_n <= 0 or baseline_n <= 0:
        return ProportionTest(z=0.0, p_value=1.0)
    pooled = (candidate_hits + baseline_hits) / (candidate_n + baseline_n)
    variance = pooled * (1 - pooled) * (1 / candidate_n + 1 / baseline_n)
    if variance <= 0:
        return ProportionTest(z=0.0, p_value=1.0)
    z = (candidate_hits / candidate_n - baseline_hits / baseline_n) / math.sqrt(variance)
    return ProportionTest(z=z, p_value=0.5 * math.erfc(z / math.sqrt(2)))
