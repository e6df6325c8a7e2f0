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
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour, TruncMonth, TruncWeek
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
    linear interpolation between ranks (see `percentile_columns`)."""
    grouped = grouped_percentiles(f"SELECT 0 AS g, v FROM ({values_sql}) AS s", params, qs)
    return grouped.get(0, [None] * len(qs))


def grouped_percentiles(
    grouped_sql: str, params: Sequence[Any], qs: Sequence[float] = (50, 95)
) -> dict[Any, list[float | None]]:
    """The same for each group of a query of two columns, `g` and `v`."""
    figures = percentile_columns(grouped_sql, params, {"v": qs})
    return {group: values["v"] for group, values in figures.items() if values["v"][0] is not None}


def percentile_columns(
    grouped_sql: str, params: Sequence[Any], columns: dict[str, Sequence[float]], count: bool = False
) -> dict[Any, dict[str, list[float | None]]]:
    """Percentiles of several columns of a query, per group: the query has a column `g` and one
    column for each name of `columns` (whose NULLs are left out), and each name gets its
    percentiles (0-100, Nones where a group has no value); with `count`, "n" is the group's
    rows. PostgreSQL computes them all in one pass with `percentile_cont` (one sort per column
    and group, in the aggregate); elsewhere the ranks around each percentile come from a
    window-function query per column and are interpolated here: the same definition both ways."""
    for name in columns:
        if not name.isidentifier() or name in ("g", "n"):
            raise ValueError(f"not a column name: {name!r}")
    if connection.vendor == "postgresql":
        aggregates = [
            f"percentile_cont(ARRAY[{', '.join(f'{q / 100:.6f}' for q in qs)}]::float8[]) "
            f"WITHIN GROUP (ORDER BY s.{name})"
            for name, qs in columns.items()
        ]
        if count:
            aggregates.append("COUNT(*)")
        sql = f"SELECT s.g, {', '.join(aggregates)} FROM ({grouped_sql}) AS s GROUP BY s.g"
        with connection.cursor() as cursor:
            cursor.execute(sql, list(params))
            rows = cursor.fetchall()
        result: dict[Any, dict[str, list[float | None]]] = {}
        for group, *values in rows:
            figures: dict[str, Any] = {
                name: [None] * len(qs) if found is None else [float(value) for value in found]
                for (name, qs), found in zip(columns.items(), values, strict=False)
            }
            if count:
                figures["n"] = values[-1]
            result[group] = figures
        return result
    result = {}
    if count:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT s.g, COUNT(*) FROM ({grouped_sql}) AS s GROUP BY s.g", list(params))
            for group, n in cursor.fetchall():
                result[group] = {name: [None] * len(qs) for name, qs in columns.items()} | {"n": n}
    for name, qs in columns.items():
        for group, values in _ranked_percentiles(
            f"SELECT s.g AS g, s.{name} AS v FROM ({grouped_sql}) AS s", params, qs
        ).items():
            result.setdefault(group, {other: [None] * len(oqs) for other, oqs in columns.items()})[name] = values
    return result


def _ranked_percentiles(grouped_sql: str, params: Sequence[Any], qs: Sequence[float]) -> dict[Any, list[float | None]]:
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
    # Without the model's default ordering: a subquery that only feeds an aggregate need not be
    # sorted (a million messages by time, for nothing), and DISTINCT must not take the ordering's
    # columns into its rows.
    return queryset.order_by().values(*fields).query.sql_with_params()


# -- figures ------------------------------------------------------------------------------------------
def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def satisfaction(filters: Filters) -> list[Dataset]:
    # One pass over the period's conversations with their ratings: per period (by the day, week
    # or month the conversation started: the period's cohort, as everywhere) and score (None:
    # not rated), the conversations and the resolved ones. Every figure below adds these up.
    trunc = GRAINS[filters.grain]
    cells = (
        conversations(filters)
        .order_by()
        .annotate(period=trunc("created_at"))
        .values("period", "rating__score")
        .annotate(n=Count("id"), resolved=Count("id", filter=Q(status=Conversation.Status.RESOLVED)))
    )
    resolved = 0
    by_score: dict[int, int] = {}
    by_period: dict[str, tuple[int, int]] = {}
    for row in cells:
        resolved += row["resolved"]
        score = row["rating__score"]
        if score is None:
            continue
        by_score[score] = by_score.get(score, 0) + row["n"]
        period = _period(row["period"])
        count, happy = by_period.get(period, (0, 0))
        by_period[period] = (count + row["n"], happy + (row["n"] if score >= 4 else 0))
    totals = {"count": sum(by_score.values()), "happy": sum(n for score, n in by_score.items() if score >= 4)}
    summary = Dataset(
        "csat_summary",
        "Satisfaction",
        ["CSAT %", "ratings", "resolved conversations", "response rate %"],
        [[_rate(totals["happy"], totals["count"]), totals["count"], resolved, _rate(totals["count"], resolved)]],
    )
    distribution = Dataset(
        "score_distribution",
        "Ratings by score",
        ["score", "ratings"],
        [[s, by_score.get(s, 0)] for s in range(1, 6)],
        "bar",
    )
    over_time = Dataset("csat_over_time", "CSAT over time", ["period", "ratings", "CSAT %"], chart="line")
    for period in periods(filters):
        count, happy = by_period.get(period, (0, 0))
        over_time.rows.append([period, count, _rate(happy, count)])
    rated = ratings(filters)
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
    # The conversations started, by the hour: both the periods and the heatmap's cells add them up.
    cells: dict[tuple[int, int], int] = {}
    for row in (
        conversations(filters).order_by().annotate(hour=TruncHour("created_at")).values("hour").annotate(n=Count("id"))
    ):
        hour = _local(row["hour"])
        counts.setdefault(_period_of(hour, filters.grain), [0, 0])[0] += row["n"]
        cells[(hour.isoweekday(), hour.hour)] = cells.get((hour.isoweekday(), hour.hour), 0) + row["n"]
    for row in messages(filters).annotate(period=trunc("created_at")).values("period").annotate(n=Count("id")):
        counts.setdefault(_period(row["period"]), [0, 0])[1] = row["n"]
    over_time = Dataset(
        "volume_over_time",
        "Conversations and messages",
        ["period", "conversations", "messages"],
        [[period, *values] for period, values in sorted(counts.items())],
        "line",
    )
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
    # The counts per handoff reason (blank where never handed off), in one pass: the totals add
    # them up, and the handed-off ones are the reasons' chart, most first.
    by_reason = list(
        cohort.order_by()
        .values("handoff_reason")
        .annotate(
            count=Count("id"),
            handed=Count("id", filter=Q(escalated_at__isnull=False)),
            resolved=Count("id", filter=Q(status=Conversation.Status.RESOLVED)),
            bot_resolved=Count("id", filter=Q(status=Conversation.Status.RESOLVED, escalated_at__isnull=True)),
        )
        .order_by("-handed", "handoff_reason")
    )
    totals = {key: sum(row[key] for row in by_reason) for key in ("count", "handed", "resolved", "bot_resolved")}
    # Both durations in one pass over the cohort (each percentile leaves its NULLs out).
    sql, params = _sql(cohort, "created_at", "first_response_at", "resolved_at")
    durations = percentile_columns(
        f"SELECT 0 AS g, {_seconds_between('c.first_response_at', 'c.created_at')} AS first_response, "
        f"{_seconds_between('c.resolved_at', 'c.created_at')} AS resolution FROM ({sql}) c",
        params,
        {"first_response": (50, 95), "resolution": (50, 95)},
    ).get(0, {})
    first_response = durations.get("first_response", [None, None])
    resolution = durations.get("resolution", [None, None])
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
            [labels.get(row["handoff_reason"], row["handoff_reason"]), row["handed"]]
            for row in by_reason
            if row["handed"]
        ],
        "bar",
    )
    return [summary, reasons]


def agents(filters: Filters) -> list[Dataset]:
    cohort = conversations(filters).filter(Q(assigned_agent__isnull=False) | Q(resolved_by_agent__isnull=False))
    sql, params = _sql(
        cohort, "assigned_agent_id", "resolved_by_agent_id", "escalated_at", "first_agent_reply_at", "resolved_at"
    )
    # Per handler (the agent who resolved it, else its owner), in one pass: the conversations,
    # and the percentiles of the first reply and of the resolution (from the handoff).
    handler = "COALESCE(c.resolved_by_agent_id, c.assigned_agent_id)"
    per_agent = percentile_columns(
        f"SELECT {handler} AS g, {_seconds_between('c.first_agent_reply_at', 'c.escalated_at')} AS first_reply, "
        f"{_seconds_between('c.resolved_at', 'c.escalated_at')} AS resolution FROM ({sql}) c",
        params,
        {"first_reply": (50,), "resolution": (50,)},
        count=True,
    )
    handled = {agent_id: figures["n"] for agent_id, figures in per_agent.items()}
    first_reply = {agent_id: figures["first_reply"] for agent_id, figures in per_agent.items()}
    resolution = {agent_id: figures["resolution"] for agent_id, figures in per_agent.items()}
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
    # The answers per variant and their measures' percentiles, in one pass over the answers.
    sql, params = _sql(
        answers,
        "model_variant",
        "time_to_first_token_ms",
        "time_to_first_answer_token_ms",
        "reasoning_tokens",
        "tokens_per_s",
        "queue_wait_ms",
    )
    measured = percentile_columns(
        f"SELECT m.model_variant AS g, m.time_to_first_token_ms AS ttft, "
        f"m.time_to_first_answer_token_ms AS ttfa, m.reasoning_tokens AS reasoning, m.tokens_per_s AS speed, "
        f"m.queue_wait_ms AS wait FROM ({sql}) m",
        params,
        {"ttft": (50, 95), "ttfa": (50, 95), "reasoning": (50,), "speed": (50,), "wait": (50, 95)},
        count=True,
    )
    # Answers whose reasoning the engine closed at its budget (REASONING_BUDGET_TOKENS).
    cut = dict(answers.filter(reasoning_cut=True).values_list("model_variant").annotate(n=Count("id")))
    answer_counts = {variant: figures["n"] for variant, figures in measured.items()}
    ttft = {variant: figures["ttft"] for variant, figures in measured.items()}
    ttfa = {variant: figures["ttfa"] for variant, figures in measured.items()}
    reasoning = {variant: figures["reasoning"] for variant, figures in measured.items()}
    speed = {variant: figures["speed"] for variant, figures in measured.items()}
    wait = {variant: figures["wait"] for variant, figures in measured.items()}
    # Each conversation counts for every variant that answered in it: one pass over the bot's
    # answers in the period's conversations, each with its conversation's handoff and rating
    # (joined once, on the conversations' side), kept once per (variant, conversation).
    cohort_sql, cohort_params = _sql(
        conversations(filters).annotate(rated_score=F("rating__score")), "id", "escalated_at", "rated_score"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.model_variant, COUNT(*), SUM(p.handed), COUNT(p.score), "
            "SUM(CASE WHEN p.score >= 4 THEN 1 ELSE 0 END) FROM ("
            "SELECT DISTINCT m.model_variant, m.conversation_id, "
            "CASE WHEN c.escalated_at IS NOT NULL THEN 1 ELSE 0 END AS handed, c.rated_score AS score "
            f'FROM "{Message._meta.db_table}" m JOIN ({cohort_sql}) c ON c.id = m.conversation_id '
            "WHERE m.author = %s AND m.model_variant <> %s) p "
            "GROUP BY p.model_variant",
            [*cohort_params, Message.Author.BOT, ""],
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
            "first answer token p50 ms",
            "first answer token p95 ms",
            "reasoning tokens p50",
            "cut by budget %",
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
                *_ms(ttfa.get(variant, [None, None])),
                _one_decimal(reasoning.get(variant, [None])[0]),
                _rate(cut.get(variant, 0), answer_counts.get(variant, 0)),
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


def _local(moment: dt.datetime) -> dt.datetime:
    return timezone.localtime(moment) if timezone.is_aware(moment) else moment


def _period_of(moment: dt.datetime, grain: str) -> str:
    """The period of the grain (as `_period` writes what GRAINS truncate to) of a local time."""
    day = moment.date()
    if grain == "week":
        day -= dt.timedelta(days=day.weekday())
    elif grain == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _period(moment: dt.datetime | dt.date | None) -> str:
    if moment is None:
        return ""
    if isinstance(moment, dt.datetime):
        moment = timezone.localtime(moment) if timezone.is_aware(moment) else moment
        return moment.date().isoformat()
    return moment.isoformat()
