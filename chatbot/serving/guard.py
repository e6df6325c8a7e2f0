"""The rollout guard's decision: is the candidate worse than the baseline on a quality signal,
by more than the signal's threshold, on enough conversations, and beyond noise (a one-sided
two-proportion test)? Pure: it reads the comparison's figures and the settings, writes nothing
(`services.rollout_guard_check` acts on it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings

from chatbot.serving.selectors import ArmFigures
from chatbot.serving.statistics import two_proportion_test


@dataclass(frozen=True)
class Signal:
    name: str
    label: str
    # (bad outcomes, conversations behind them) of an arm: the rate tested is the first over the second.
    counts: Callable[[ArmFigures], tuple[int, int]]
    points_setting: str
    min_setting: str


SIGNALS = (
    Signal(
        "failure",
        "failure rate",
        lambda arm: (arm.failed_conversations, arm.ended_conversations),
        "ROLLOUT_GUARD_FAILURE_POINTS",
        "ROLLOUT_GUARD_MIN_CONVERSATIONS",
    ),
    Signal(
        "no_answer",
        "no-answer rate",
        lambda arm: (arm.no_answer_conversations, arm.answered_conversations),
        "ROLLOUT_GUARD_NO_ANSWER_POINTS",
        "ROLLOUT_GUARD_MIN_CONVERSATIONS",
    ),
    Signal(
        "handoff",
        "handoff rate",
        lambda arm: (arm.handed_off, arm.conversations),
        "ROLLOUT_GUARD_HANDOFF_POINTS",
        "ROLLOUT_GUARD_MIN_CONVERSATIONS",
    ),
    # CSAT is tested as its complement, the share of ratings of 1-3: higher is worse, as for the others.
    Signal(
        "csat",
        "dissatisfied ratings (1-3)",
        lambda arm: (arm.rated - arm.satisfied, arm.rated),
        "ROLLOUT_GUARD_CSAT_POINTS",
        "ROLLOUT_GUARD_MIN_RATINGS",
    ),
)


@dataclass(frozen=True)
class Assessment:
    """One signal as the guard sees it now. `breached` when both arms have the minimum count,
    the candidate is worse by at least the threshold, and the test's p-value is below alpha."""

    signal: str
    label: str
    candidate: str
    candidate_bad: int
    candidate_n: int
    baseline: str
    baseline_bad: int
    baseline_n: int
    gap_points: float | None
    threshold_points: float
    min_count: int
    z: float
    p_value: float
    alpha: float
    enough_data: bool
    breached: bool

    def evidence(self) -> str:
        """The sentence that goes into the audit record's reason."""
        return (
            f"{self.label}: {self.candidate} {_percent(self.candidate_bad, self.candidate_n)} "
            f"({self.candidate_bad}/{self.candidate_n} conversations) vs {self.baseline} "
            f"{_percent(self.baseline_bad, self.baseline_n)} ({self.baseline_bad}/{self.baseline_n}), "
            f"{self.gap_points or 0:+.1f} points (threshold {self.threshold_points:g}), "
            f"z {self.z:.2f}, one-sided p {self.p_value:.2g} < {self.alpha:g}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def guard_assess(*, baseline: ArmFigures, candidate: ArmFigures) -> list[Assessment]:
    """Every signal's assessment, in the order of SIGNALS."""
    alpha = settings.ROLLOUT_GUARD_ALPHA
    assessments = []
    for signal in SIGNALS:
        candidate_bad, candidate_n = signal.counts(candidate)
        baseline_bad, baseline_n = signal.counts(baseline)
        threshold = float(getattr(settings, signal.points_setting))
        min_count = int(getattr(settings, signal.min_setting))
        gap = 100 * (candidate_bad / candidate_n - baseline_bad / baseline_n) if candidate_n and baseline_n else None
        test = two_proportion_test(
            candidate_hits=candidate_bad, candidate_n=candidate_n, baseline_hits=baseline_bad, baseline_n=baseline_n
        )
        enough = candidate_n >= min_count and baseline_n >= min_count
        assessments.append(
            Assessment(
                signal=signal.name,
                label=signal.label,
                candidate=candidate.variant,
                candidate_bad=candidate_bad,
                candidate_n=candidate_n,
                baseline=baseline.variant,
                baseline_bad=baseline_bad,
                baseline_n=baseline_n,
                gap_points=gap,
                threshold_points=threshold,
                min_count=min_count,
                z=test.z,
                p_value=test.p_value,
                alpha=alpha,
                enough_data=enough,
                # (a gap of exactly the threshold counts, whatever the float arithmetic left over)
                breached=enough and gap is not None and gap >= threshold - 1e-9 and test.p_value < alpha,
            )
        )
    return assessments
