"""Reads about model serving: the active variant and the rollout in progress (the plan new
messages follow), what the running workers report, and the rollout's live comparison."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, F, Q
from django.utils import timezone

from chatbot.serving.heartbeats import worker_status_list
from chatbot.serving.models import Rollout, RolloutAssignment, ServingState

_cache: dict[str, tuple[float, ServingPlan]] = {}


def _now() -> float:
    return time.monotonic()


@dataclass(frozen=True)
class ServingPlan:
    """Where new generations go: the active variant (the baseline), and during a rollout its
    candidate and the share (percent) of new conversations that start on the candidate."""

    baseline: str
    candidate: str = ""
    percent: int = 0
    rollout_id: int | None = None

    @property
    def splitting(self) -> bool:
        return self.rollout_id is not None and 0 < self.percent < 100


def serving_plan_get(*, fresh: bool = False) -> ServingPlan:
    """The serving plan, cached per process for ACTIVE_VARIANT_CACHE_S, so a switch or a share
    change reaches every web process within that time without a query per message."""
    cached = _cache.get("plan")
    if not fresh and cached is not None and _now() - cached[0] < settings.ACTIVE_VARIANT_CACHE_S:
        return cached[1]
    state = ServingState.objects.filter(pk=1).select_related("rollout").first()
    if state is None:
        plan = ServingPlan(baseline=settings.DEFAULT_MODEL_VARIANT)
    elif state.rollout is not None:
        plan = ServingPlan(
            baseline=state.active_variant,
            candidate=state.rollout.candidate,
            percent=state.candidate_percent,
            rollout_id=state.rollout_id,
        )
    else:
        plan = ServingPlan(baseline=state.active_variant)
    _cache["plan"] = (_now(), plan)
    return plan


def active_variant_get(*, fresh: bool = False) -> str:
    """The variant new generations run on outside a rollout's candidate share (the baseline)."""
    return serving_plan_get(fresh=fresh).baseline


def active_variant_cache_clear() -> None:
    _cache.clear()


def rollout_draw(*, rollout_id: int, public_id: str) -> float:
    """A conversation's place in [0, 1) for a rollout: a hash of both, so the same conversation
    always draws the same and the draws of random public ids are uniform. The conversation starts
    on the candidate when its draw is below the share."""
    digest = hashlib.sha256(f"{rollout_id}:{public_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def rollout_conversation_variant(*, plan: ServingPlan, conversation_id: int) -> str:
    """The variant a later message of a conversation runs on: during a split, the one it started
    on in this rollout (sticky); a conversation that started before the rollout stays on the
    baseline. Outside a split (no rollout, or rolled back to 0%), the baseline."""
    if not plan.splitting:
        return plan.baseline
    variant = (
        RolloutAssignment.objects.filter(conversation_id=conversation_id, rollout_id=plan.rollout_id)
        .values_list("variant", flat=True)
        .first()
    )
    return variant or plan.baseline


def variant_is_served(*, variant: str) -> bool:
    """True when at least one live worker takes messages for the variant."""
    return any(worker.takes_messages(variant) for worker in worker_status_list())


# -- the rollout's live comparison -------------------------------------------------------------------


@dataclass
class ArmFigures:
    """One arm of a rollout: its conversations (those that started on the variant) and, in them,
    the answers the variant wrote. Every rate says how many conversations it stands on."""

    variant: str
    conversations: int = 0
    answers: int = 0
    failures: int = 0
    no_answers: int = 0
    # Conversations with at least one ended answer (done or failed), with a failed one, with a
    # stored answer, with a "no answer" reply; handed to a person; rated; rated 4 or 5.
    ended_conversations: int = 0
    failed_conversations: int = 0
    answered_conversations: int = 0
    no_answer_conversations: int = 0
    handed_off: int = 0
    rated: int = 0
    satisfied: int = 0
    ttft_p95_ms: float | None = None

    @property
    def failure_rate(self) -> float | None:
        return _share(self.failed_conversations, self.ended_conversations)

    @property
    def no_answer_rate(self) -> float | None:
        return _share(self.no_answer_conversations, self.answered_conversations)

    @property
    def handoff_rate(self) -> float | None:
        return _share(self.handed_off, self.conversations)

    @property
    def csat(self) -> float | None:
        return _share(self.satisfied, self.rated)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class RolloutComparison:
    rollout: Rollout
    since: dt.datetime
    baseline: ArmFigures
    candidate: ArmFigures
    arms: list[ArmFigures] = field(default_factory=list)


def rollout_comparison(*, rollout: Rollout, now: dt.datetime | None = None) -> RolloutComparison:
    """The rollout's two arms side by side over its window (its conversations that started in
    the last ROLLOUT_WINDOW_HOURS, up to its end). Four queries, grouped by arm."""
    from chatbot.analytics.selectors import grouped_percentiles  # analytics reads serving's models
    from chatbot.conversations.models import Generation, Message

    end = rollout.ended_at or now or timezone.now()
    since = max(rollout.started_at, end - dt.timedelta(hours=settings.ROLLOUT_WINDOW_HOURS))
    arm = "conversation__rollout_assignment__variant"
    in_window = {
        "conversation__rollout_assignment__rollout_id": rollout.pk,
        "conversation__rollout_assignment__assigned_at__gte": since,
    }
    figures = {name: ArmFigures(variant=name) for name in (rollout.baseline, rollout.candidate)}

    for row in (
        RolloutAssignment.objects.filter(rollout_id=rollout.pk, assigned_at__gte=since)
        .values("variant")
        .annotate(
            conversations=Count("id"),
            handed_off=Count("id", filter=Q(conversation__escalated_at__isnull=False)),
            rated=Count("conversation__rating"),
            satisfied=Count("conversation__rating", filter=Q(conversation__rating__score__gte=4)),
        )
    ):
        target = figures.setdefault(row["variant"], ArmFigures(variant=row["variant"]))
        for name in ("conversations", "handed_off", "rated", "satisfied"):
            setattr(target, name, row[name])

    failed = Q(status=Generation.Status.FAILED)
    for row in (
        Generation.objects.filter(
            **in_window,
            kind=Generation.Kind.ANSWER,
            status__in=[Generation.Status.DONE, Generation.Status.FAILED],
            model_variant=F(arm),
        )
        .values(arm)
        .annotate(
            failures=Count("id", filter=failed),
            ended_conversations=Count("conversation", distinct=True),
            failed_conversations=Count("conversation", distinct=True, filter=failed),
        )
    ):
        target = figures.setdefault(row[arm], ArmFigures(variant=row[arm]))
        for name in ("failures", "ended_conversations", "failed_conversations"):
            setattr(target, name, row[name])

    answers = Message.objects.filter(**in_window, author=Message.Author.BOT, model_variant=F(arm))
    for row in answers.values(arm).annotate(
        answers=Count("id"),
        no_answers=Count("id", filter=Q(no_answer=True)),
        answered_conversations=Count("conversation", distinct=True),
        no_answer_conversations=Count("conversation", distinct=True, filter=Q(no_answer=True)),
    ):
        target = figures.setdefault(row[arm], ArmFigures(variant=row[arm]))
        for name in ("answers", "no_answers", "answered_conversations", "no_answer_conversations"):
            setattr(target, name, row[name])

    sql, params = answers.values("model_variant", "time_to_first_token_ms").query.sql_with_params()
    ttft = grouped_percentiles(
        f"SELECT m.model_variant AS g, m.time_to_first_token_ms AS v FROM ({sql}) m", params, (95,)
    )
    for name, values in ttft.items():
        if name in figures:
            figures[name].ttft_p95_ms = values[0]
    return RolloutComparison(
        rollout=rollout,
        since=since,
        baseline=figures[rollout.baseline],
        candidate=figures[rollout.candidate],
        arms=[figures[rollout.baseline], figures[rollout.candidate]],
    )


def rollout_shown() -> Rollout | None:
    """The rollout the pages compare: the one running, else the latest."""
    return Rollout.objects.select_related("started_by", "acknowledged_by").first()


def rollout_guard_alert() -> Rollout | None:
    """The rollout the guard rolled back and no staff member has acknowledged yet: the banner."""
    return (
        Rollout.objects.filter(outcome=Rollout.Outcome.GUARD, acknowledged_at__isnull=True)
        .order_by("-ended_at")
        .first()
    )


ROLLOUT_COLUMNS = [
    "variant",
    "conversations",
    "answers",
    "failures",
    "no-answer replies",
    "failure rate %",
    "conversations with an ended answer",
    "no-answer rate %",
    "conversations with an answer",
    "handoff rate %",
    "ratings",
    "CSAT %",
    "TTFT p95 ms",
]


def rollout_comparison_rows(comparison: RolloutComparison) -> list[list]:
    """The comparison as a table, one row per arm (baseline first) in ROLLOUT_COLUMNS: each rate
    with the count of conversations behind it (the handoff rate's is `conversations`, CSAT's is
    `ratings`, TTFT's is `answers`)."""

    def percent(rate: float | None) -> float | None:
        return None if rate is None else round(100 * rate, 1)

    rows = []
    for arm, role in ((comparison.baseline, "baseline"), (comparison.candidate, "candidate")):
        rows.append(
            [
                f"{arm.variant} ({role})",
                arm.conversations,
                arm.answers,
                arm.failures,
                arm.no_answers,
                percent(arm.failure_rate),
                arm.ended_conversations,
                percent(arm.no_answer_rate),
                arm.answered_conversations,
                percent(arm.handoff_rate),
                arm.rated,
                percent(arm.csat),
                None if arm.ttft_p95_ms is None else round(arm.ttft_p95_ms),
            ]
        )
    return rows
