"""The support analytics, computed in the database (PostgreSQL or SQLite) over a period, with
filters. Every figure is a `Dataset`: a title, columns and rows, which the page draws as a chart
and a table and offers as CSV, so the three always agree.

Definitions (docs/analytics.md says them for staff):
- The period's conversations are those created in it; its messages those written in it.
- CSAT: the share of ratings of 4 or 5 among the ratings; response rate: ratings per resolved
  conversation.
- Bot resolution rate: resolved conversations never handed to a person, among the resolved;
  handoff rate: conversations handed to a person, among all.
- First response: from a conversation's start to the first reply (the bot's or an agent's,
  stored on the conversation as `first_response_at`); resolution time: from its start to its
  resolution; an agent's first reply: from the handoff to their first message.
- Traffic (the heatmap): conversations started, by weekday and hour.
- Percentiles interpolate linearly between ranks, the same way on both databases.
- Filters: a model variant (conversations it answered in, and its own messages), an agent
  (conversations they handled), and who handled it: the bot alone, or an agent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay, TruncDay, TruncMonth, TruncWeek
from django.utils import timezone

from chatbot.conversations.models import Conversation, Generation, Message, Rating
from chatbot.serving.models import VariantChange
from chatbot.serving.selectors import ROLLOUT_COLUMNS, rollout_comparison, rollout_comparison_rows, rollout_shown

GRAINS = {"day": TruncDay, "week": TruncWeek, "month": TruncMonth}
HANDLED_BY = ("bot", "agent")
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@dataclass(frozen=True)
class Filters:
    start: dt.datetime
    end: dt.datetime
    grain: str = "day"
    variant: str = ""
    agent_id: int | None = None
    handled_by: str = ""  # "" | "bot" | "agent"
    comment_score: int | None = None


@dataclass
class Dataset:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    chart: str = "table"  # "line" | "bar" | "heatmap" | "table"
    # Columns of text people wrote (customers' comments, staff's reasons): a CSV guards them.
    free_text: tuple[str, ...] = ()


# -- the period's conversations and messages ---------------------------------------------------------
def _agent_handled() -> Q:
    return Q(assigned_agent__isnull=False) | Q(resolved_by_agent__isnull=False) | Q(first_agent_reply_at__isnull=False)


def conversations(filters: Filters) -> QuerySet[Conversation]:
    queryset = Conversation.objects.filter(created_at__gte=filters.start, created_at__lt=filters.end)
    if filters.variant:
        answered = Message.objects.filter(
            conversation=OuterRef("pk"), author=Message.Author.BOT, model_variant=filters.variant
        )
        queryset = queryset.filter(Exists(answered))
    if filters.agent_id:
        queryset = queryset.filter(Q(assigned_agent_id=filters.agent_id) | Q(resolved_by_agent_id=filters.agent_id))
    if filters.handled_by == "agent":
        queryset = queryset.filter(_agent_handled())
    elif filters.handled_by == "bot":
        queryset = queryset.exclude(_agent_handled())
    return queryset


def _narrowed(filters: Filters) -> bool:
    """Filters that pick conversations (not only a period)."""
    return bool(filters.agent_id or filters.handled_by)


def messages(filters: Filters) -> QuerySet[Message]:
    queryset = Message.objects.filter(created_at__gte=filters.start, created_at__lt=filters.end)
    if filters.variant:
        queryset = queryset.filter(Q(model_variant=filters.variant) | ~Q(author=Message.Author.BOT))
        queryset = queryset.filter(conversation__in=conversations(filters))
    elif _narrowed(filters):
        queryset = queryset.filter(conversation__in=conversations(filters))
    return queryset


def ratings(filters: Filters) -> QuerySet[Rating]:
    return Rating.objects.filter(conversation__in=conversations(filters))


# -- percentiles in the database ------------------------------------------------------------------
def percentiles(values_sql: str, params: Sequence[Any], qs: Sequence[float] = (50, 95)) -> list[float | None]:
    """Percentiles (0-100) of the values a query yields (its one column, NULLs left out), with
    linear interpolation between ranks: one window-function query that returns only the rows
    around each rank, on PostgreSQL and SQLite alike."""
    grouped = grouped_percentiles(f"SELECT 0 AS g, v FROM ({values_sql}) AS s", params, qs)
    return grouped.get(0, [None] * len(qs))


def grouped_percentiles(
    grouped_sql: str, params: Sequence[Any], qs: Sequence[float] = (50, 95)
) -> dict[Any, list[float | None]]:
    """The same for each group of a query of two columns, `g` and `v`. PostgreSQL computes them
    with `percentile_cont` (one sort per group, in the aggregate); elsewhere the ranks around
    each percentile come from a window-function query and are interpolated here: the same
    definition both ways."""
    if connection.vendor == "postgresql":
        fractions = ", ".join(f"{q / 100:.6f}" for q in qs)
        sql = (
            f"SELECT g, percentile_cont(ARRAY[{fractions}]) WITHIN GROUP (ORDER BY v) "
            f"FROM ({grouped_sql}) AS s WHERE v IS NOT NULL GROUP BY g"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, list(params))
            return {group: [float(value) for value in values] for group, values in cursor.fetchall()}
    wanted = " OR ".join(
        f"(i = {_floor(f'(n - 1) * {q / 100:.6f}')} OR i = {_floor(f'(n - 1) * {q / 100:.6f}')} + 1)" for q in qs
    )
    sql = (
        f"WITH r AS (SELECT g, v, ROW_NUMBER() OVER (PARTITION BY g ORDER BY v) - 1 AS i, "
        f"COUNT(*) OVER (PARTITION BY g) AS n FROM ({grouped_sql}) AS s WHERE v IS NOT NULL) "
        f"SELECT g, i, n, v FROM r WHERE {wanted}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        rows = cursor.fetchall()
    ranked: dict[Any, tuple[int, dict[int, float]]] = {}
    for group, index, count, value in rows:
        ranked.setdefault(group, (count, {}))[1][index] = float(value)
    result = {}
    for group, (count, values) in ranked.items():
        figures = []
        for q in qs:
            position = (count - 1) * q / 100
            low = int(position)
            high = min(low + 1, count - 1)
            figures.append(values[low] + (values[high] - values[low]) * (position - low))
        result[group] = figures
    return result


def _floor(expression: str) -> str:
    # SQLite's CAST truncates; PostgreSQL's rounds, and FLOOR is not in every SQLite build.
    if connection.vendor == "sqlite":
        return f"CAST({expression} AS INTEGER)"
    return f"FLOOR({expression})"


def _seconds_between(later: str, earlier: str) -> str:
    if connection.vendor == "sqlite":
        return f"((julianday({later}) - julianday({earlier})) * 86400.0)"
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


def _sql(queryset: QuerySet, *fields: str) -> tuple[str, tuple]:
    return queryset.values(*fields).query.sql_with_params()


# -- figures ------------------------------------------------------------------------------------------
def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def satisfaction(filters: Filters) -> list[Dataset]:
    rated = ratings(filters)
    totals = rated.aggregate(count=Count("id"), happy=Count("id", filter=Q(score__gte=4)))
    resolved = conversations(filters).filter(status=Conversation.Status.RESOLVED).count()
    summary = Dataset(
        "csat_summary",
        "Satisfaction",
        ["CSAT %", "ratings", "resolved conversations", "response rate %"],
        [[_rate(totals["happy"], totals["count"]), totals["count"], resolved, _rate(totals["count"], resolved)]],
    )
    by_score = dict(rated.values_list("score").annotate(n=Count("id")))
    distribution = Dataset(
        "score_distribution",
        "Ratings by score",
        ["score", "ratings"],
        [[s, by_score.get(s, 0)] for s in range(1, 6)],
        "bar",
    )
    # By the day (week, month) the rated conversations started: the period's cohort, as everywhere.
    trunc = GRAINS[filters.grain]
    by_period = {
        _period(row["period"]): (row["count"], row["happy"])
        for row in rated.annotate(period=trunc("conversation__created_at"))
        .values("period")
        .annotate(count=Count("id"), happy=Count("id", filter=Q(score__gte=4)))
    }
    over_time = Dataset("csat_over_time", "CSAT over time", ["period", "ratings", "CSAT %"], chart="line")
    for period in periods(filters):
        count, happy = by_period.get(period, (0, 0))
        over_time.rows.append([period, count, _rate(happy, count)])
    latest = rated.exclude(comment="").select_related("conversation", "agent").order_by("-created_at")
    if filters.comment_score:
        latest = latest.filter(score=filters.comment_score)
    comments = Dataset(
        "comments",
        "Latest comments",
        ["rated at", "score", "comment", "credited to", "conversation"],
        free_text=("comment",),
    )
    for rating in latest[:50]:
        credited = rating.agent.get_username() if rating.agent_id else rating.get_credited_to_display()
        comments.rows.append(
            [
                rating.created_at.isoformat(timespec="seconds"),
                rating.score,
                rating.comment,
                credited,
                rating.conversation.public_id,
            ]
        )
    return [summary, distribution, over_time, comments]


def volume(filters: Filters) -> list[Dataset]:
    trunc = GRAINS[filters.grain]
    counts: dict[str, list[int]] = {period: [0, 0] for period in periods(filters)}
    for row in conversations(filters).annotate(period=trunc("created_at")).values("period").annotate(n=Count("id")):
        counts.setdefault(_period(row["period"]), [0, 0])[0] = row["n"]
    for row in messages(filters).annotate(period=trunc("created_at")).values("period").annotate(n=Count("id")):
        counts.setdefault(_period(row["period"]), [0, 0])[1] = row["n"]
    over_time = Dataset(
        "volume_over_time",
        "Conversations and messages",
        ["period", "conversations", "messages"],
        [[period, *values] for period, values in sorted(counts.items())],
        "line",
    )
    cells = {
        (row["weekday"], row["hour"]): row["n"]
        for row in conversations(filters)
        .annotate(weekday=ExtractIsoWeekDay("created_at"), hour=ExtractHour("created_at"))
        .values("weekday", "hour")
        .annotate(n=Count("id"))
    }
    heatmap = Dataset(
        "heatmap",
        "Conversations started by weekday and hour (UTC)",
        ["weekday", *[f"{hour:02d}" for hour in range(24)]],
        [[WEEKDAYS[day - 1], *[cells.get((day, hour), 0) for hour in range(24)]] for day in range(1, 8)],
        "heatmap",
    )
    return [over_time, heatmap]


def bot(filters: Filters) -> list[Dataset]:
    cohort = conversations(filters)
    totals = cohort.aggregate(
        count=Count("id"),
        handed=Count("id", filter=Q(escalated_at__isnull=False)),
        resolved=Count("id", filter=Q(status=Conversation.Status.RESOLVED)),
        bot_resolved=Count("id", filter=Q(status=Conversation.Status.RESOLVED, escalated_at__isnull=True)),
    )
    replied_sql, replied_params = _sql(
        cohort.filter(first_response_at__isnull=False), "created_at", "first_response_at"
    )
    first_response = percentiles(
        f"SELECT {_seconds_between('c.first_response_at', 'c.created_at')} AS v FROM ({replied_sql}) c", replied_params
    )
    resolved_sql, resolved_params = _sql(cohort.filter(resolved_at__isnull=False), "created_at", "resolved_at")
    resolution = percentiles(
        f"SELECT {_seconds_between('c.resolved_at', 'c.created_at')} AS v FROM ({resolved_sql}) c", resolved_params
    )
    summary = Dataset(
        "bot_summary",
        "The bot",
        [
            "conversations",
            "bot resolution rate %",
            "handoff rate %",
            "first response p50 s",
            "first response p95 s",
            "resolution p50 s",
            "resolution p95 s",
        ],
        [
            [
                totals["count"],
                _rate(totals["bot_resolved"], totals["resolved"]),
                _rate(totals["handed"], totals["count"]),
                *_seconds(first_response),
                *_seconds(resolution),
            ]
        ],
    )
    labels = dict(Conversation.HandoffReason.choices)
    reasons = Dataset(
        "handoff_reasons",
        "Handoffs by reason",
        ["reason", "conversations"],
        [
            [labels.get(row["handoff_reason"], row["handoff_reason"]), row["n"]]
            for row in cohort.filter(escalated_at__isnull=False)
            .values("handoff_reason")
            .annotate(n=Count("id"))
            .order_by("-n", "handoff_reason")
        ],
        "bar",
    )
    return [summary, reasons]


def agents(filters: Filters) -> list[Dataset]:
    cohort = conversations(filters).filter(Q(assigned_agent__isnull=False) | Q(resolved_by_agent__isnull=False))
    sql, params = _sql(
        cohort, "assigned_agent_id", "resolved_by_agent_id", "escalated_at", "first_agent_reply_at", "resolved_at"
    )
    handler = "COALESCE(c.resolved_by_agent_id, c.assigned_agent_id)"
    first_reply = grouped_percentiles(
        f"SELECT {handler} AS g, {_seconds_between('c.first_agent_reply_at', 'c.escalated_at')} AS v FROM ({sql}) c",
        params,
        (50,),
    )
    resolution = grouped_percentiles(
        f"SELECT {handler} AS g, {_seconds_between('c.resolved_at', 'c.escalated_at')} AS v FROM ({sql}) c",
        params,
        (50,),
    )
    handled: dict[int, int] = {}
    for assigned, resolver in cohort.values_list("assigned_agent_id", "resolved_by_agent_id"):
        handled[resolver or assigned] = handled.get(resolver or assigned, 0) + 1
    csat = {
        row["agent"]: (row["count"], row["happy"])
        for row in ratings(filters)
        .filter(agent__isnull=False)
        .values("agent")
        .annotate(count=Count("id"), happy=Count("id", filter=Q(score__gte=4)))
    }
    names = dict(get_user_model().objects.filter(pk__in=handled).values_list("pk", "username"))
    table = Dataset(
        "agents",
        "Agents",
        ["agent", "conversations", "first reply p50 s", "resolution p50 s", "ratings", "CSAT %"],
        chart="bar",
    )
    for agent_id, count in sorted(handled.items(), key=lambda item: (-item[1], names.get(item[0], ""))):
        rated, happy = csat.get(agent_id, (0, 0))
        table.rows.append(
            [
                names.get(agent_id, f"#{agent_id}"),
                count,
                *_seconds(first_reply.get(agent_id, [None])),
                *_seconds(resolution.get(agent_id, [None])),
                rated,
                _rate(happy, rated),
            ]
        )
    return [table]


def variants(filters: Filters) -> list[Dataset]:
    answers = messages(filters).filter(author=Message.Author.BOT).exclude(model_variant="")
    answer_counts = dict(answers.values_list("model_variant").annotate(n=Count("id")))
    failures = dict(
        Generation.objects.filter(
            created_at__gte=filters.start,
            created_at__lt=filters.end,
            kind=Generation.Kind.ANSWER,
            status=Generation.Status.FAILED,
            **({"model_variant": filters.variant} if filters.variant else {}),
        )
        .values_list("model_variant")
        .annotate(n=Count("id"))
    )
    sql, params = _sql(answers, "model_variant", "time_to_first_token_ms", "tokens_per_s", "queue_wait_ms")
    ttft = grouped_percentiles(f"SELECT m.model_variant AS g, m.time_to_first_token_ms AS v FROM ({sql}) m", params)
    speed = grouped_percentiles(f"SELECT m.model_variant AS g, m.tokens_per_s AS v FROM ({sql}) m", params, (50,))
    wait = grouped_percentiles(f"SELECT m.model_variant AS g, m.queue_wait_ms AS v FROM ({sql}) m", params)
    # Each conversation counts for every variant that answered in it: one pass over the
    # (variant, conversation) pairs, with each conversation's handoff and rating.
    pairs = (
        Message.objects.filter(author=Message.Author.BOT, conversation__in=conversations(filters))
        .exclude(model_variant="")
        .values("model_variant", "conversation_id")
        .distinct()
    )
    pairs_sql, pairs_params = pairs.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.model_variant, COUNT(*), SUM(CASE WHEN c.escalated_at IS NOT NULL THEN 1 ELSE 0 END), "
            "COUNT(r.id), SUM(CASE WHEN r.score >= 4 THEN 1 ELSE 0 END) "
            f'FROM ({pairs_sql}) p JOIN "{Conversation._meta.db_table}" c ON c.id = p.conversation_id '
            f'LEFT JOIN "{Rating._meta.db_table}" r ON r.conversation_id = p.conversation_id '
            "GROUP BY p.model_variant",
            pairs_params,
        )
        per_variant = {
            variant: {"count": count, "handed": handed or 0, "rated": rated, "happy": happy or 0}
            for variant, count, handed, rated, happy in cursor.fetchall()
        }
    for variant in set(answer_counts) | set(failures):
        per_variant.setdefault(variant, {"count": 0, "handed": 0, "rated": 0, "happy": 0})
    per_variant = dict(sorted(per_variant.items()))
    table = Dataset(
        "variants",
        "Model serving, per variant",
        [
            "variant",
            "answers",
            "failures",
            "TTFT p50 ms",
            "TTFT p95 ms",
            "tokens/s p50",
            "queue wait p50 ms",
            "queue wait p95 ms",
            "ratings",
            "CSAT %",
            "handoff rate %",
        ],
    )
    for variant, figures in per_variant.items():
        table.rows.append(
            [
                variant,
                answer_counts.get(variant, 0),
                failures.get(variant, 0),
                *_ms(ttft.get(variant, [None, None])),
                _one_decimal(speed.get(variant, [None])[0]),
                *_ms(wait.get(variant, [None, None])),
                figures["rated"],
                _rate(figures["happy"], figures["rated"]),
                _rate(figures["handed"], figures["count"]),
            ]
        )
    changes = Dataset(
        "variant_changes",
        "Switches of the serving variant",
        ["changed at", "from", "to", "by", "reason", "change"],
        rows=[
            [
                change.changed_at.isoformat(timespec="seconds"),
                change.from_variant,
                change.to_variant,
                change.changed_by.get_username()
                if change.changed_by_id
                else ("the guard" if change.kind == VariantChange.Kind.GUARD_ROLLBACK else ""),
                change.reason,
                change.summary,
            ]
            # The changes that move traffic: switches, rollout shares, the guard's rollbacks.
            for change in VariantChange.objects.filter(changed_at__gte=filters.start, changed_at__lt=filters.end)
            .exclude(kind=VariantChange.Kind.GUARD_SETTING)
            .select_related("changed_by")
            .order_by("changed_at")
        ],
        free_text=("reason",),
    )
    return [table, changes, rollout_dataset()]


def rollout_dataset() -> Dataset:
    """The gradual rollout's live comparison (the one running, else the latest; whatever the
    page's filters: its window is its own), one row per arm."""
    rollout = rollout_shown()
    title = "Rollout: no rollout yet"
    rows: list[list[Any]] = []
    if rollout is not None:
        title = f"Rollout of {rollout.candidate} beside {rollout.baseline}, {rollout.get_outcome_display().lower()}"
        rows = rollout_comparison_rows(rollout_comparison(rollout=rollout))
    return Dataset("rollout", title, list(ROLLOUT_COLUMNS), rows)


def report(filters: Filters) -> list[Dataset]:
    """Every dataset of the analytics page, in its order."""
    return [*satisfaction(filters), *volume(filters), *bot(filters), *agents(filters), *variants(filters)]


SECTIONS = {
    "satisfaction": satisfaction,
    "volume": volume,
    "bot": bot,
    "agents": agents,
    "variants": variants,
}


def dataset(filters: Filters, name: str) -> Dataset | None:
    for section in SECTIONS.values():
        for candidate in section(filters):
            if candidate.name == name:
                return candidate
    return None


# -- rounding to what a person reads ------------------------------------------------------------------
def _seconds(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 1) for v in values]


def _ms(values: Sequence[float | None]) -> list[int | None]:
    return [None if v is None else round(v) for v in values]


def _one_decimal(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def periods(filters: Filters) -> list[str]:
    """Every period of the grain that the filters' dates touch, so that a chart's time axis has
    no gaps (the days, the Mondays of the weeks, or the firsts of the months)."""
    day, last = filters.start.date(), (filters.end - dt.timedelta(microseconds=1)).date()
    if filters.grain == "week":
        day -= dt.timedelta(days=day.weekday())
    elif filters.grain == "month":
        day = day.replace(day=1)
    found = []
    while day <= last:
        found.append(day.isoformat())
        if filters.grain == "day":
            day += dt.timedelta(days=1)
        elif filters.grain == "week":
            day += dt.timedelta(days=7)
        else:
            day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return found


def _period(moment: dt.datetime | dt.date | None) -> str:
    if moment is None:
        return ""
    if isinstance(moment, dt.datetime):
        moment = timezone.localtime(moment) if timezone.is_aware(moment) else moment
        return moment.date().isoformat()
    return moment.isoformat()
