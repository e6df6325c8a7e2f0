"""Each analytics figure against a small fixture whose figures are worked out by hand, on
PostgreSQL (the suite's database) and on SQLite (the embedded demo's; the same tests run again in
a process of their own)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model

from chatbot.analytics.selectors import Filters, agents, bot, dataset, satisfaction, variants, volume
from chatbot.conversations.models import Conversation, Generation, Message, Rating
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

MONDAY = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)  # a Monday
PERIOD = Filters(start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 12, 1, tzinfo=dt.UTC))


def at(days: float = 0, seconds: float = 0, hours: float = 0) -> dt.datetime:
    return MONDAY + dt.timedelta(days=days, hours=hours, seconds=seconds)


def conversation(start: dt.datetime, **fields) -> Conversation:
    created = Conversation.objects.create(visitor_id="v", **fields)
    Conversation.objects.filter(pk=created.pk).update(created_at=start)
    created.refresh_from_db()
    return created


def message(conv: Conversation, author: str, when: dt.datetime, **fields) -> Message:
    made = Message.objects.create(conversation=conv, author=author, text=f"{author} line", **fields)
    Message.objects.filter(pk=made.pk).update(created_at=when)
    return made


def bot_answer(conv, when, variant, ttft, tps, wait) -> Message:
    return message(
        conv, "bot", when, model_variant=variant, time_to_first_token_ms=ttft, tokens_per_s=tps, queue_wait_ms=wait
    )


@pytest.fixture
def history():
    """Five conversations in the period and one before it (see each figure's test for the sums)."""
    kim = get_user_model().objects.create_user("kim", is_staff=True)
    c1 = conversation(at(), status="resolved", resolved_by="bot")
    Conversation.objects.filter(pk=c1.pk).update(resolved_at=at(hours=1), first_response_at=at(seconds=2))
    message(c1, "customer", at())
    bot_answer(c1, at(seconds=2), "gptq-int4", 100, 50, 10)
    Rating.objects.create(conversation=c1, score=5, comment="great", credited_to="bot")

    start = at(days=1)
    c2 = conversation(
        start, status="resolved", resolved_by="agent", resolved_by_agent=kim, handoff_reason="customer_request"
    )
    Conversation.objects.filter(pk=c2.pk).update(
        escalated_at=start + dt.timedelta(seconds=60),
        first_response_at=start + dt.timedelta(seconds=4),
        first_agent_reply_at=start + dt.timedelta(seconds=120),
        resolved_at=start + dt.timedelta(seconds=600),
    )
    message(c2, "customer", start)
    bot_answer(c2, start + dt.timedelta(seconds=4), "fp16", 300, 30, 30)
    message(c2, "agent", start + dt.timedelta(seconds=120), author_user=kim)
    Rating.objects.create(conversation=c2, score=2, comment="slow", credited_to="agent", agent=kim)

    c3 = conversation(at(days=2, hours=1), first_response_at=at(days=2, hours=1, seconds=10))
    message(c3, "customer", at(days=2, hours=1))
    bot_answer(c3, at(days=2, hours=1, seconds=10), "gptq-int4", 200, 40, 20)

    c4 = conversation(at(days=2, hours=2), status="waiting_for_agent", handoff_reason="bot_failed")
    Conversation.objects.filter(pk=c4.pk).update(escalated_at=at(days=2, hours=2, seconds=5))
    prompt = message(c4, "customer", at(days=2, hours=2))
    failed = Generation.objects.create(
        conversation=c4, prompt_message=prompt, model_variant="gptq-int4", status="failed"
    )
    Generation.objects.filter(pk=failed.pk).update(created_at=at(days=2, hours=2))

    c5 = conversation(at(days=3, hours=-1), status="resolved", resolved_by="customer")
    Conversation.objects.filter(pk=c5.pk).update(
        resolved_at=at(days=3, hours=-1, seconds=1800), first_response_at=at(days=3, hours=-1, seconds=6)
    )
    message(c5, "customer", at(days=3, hours=-1))
    bot_answer(c5, at(days=3, hours=-1, seconds=6), "gptq-int4", 400, 60, 40)
    Rating.objects.create(conversation=c5, score=4, credited_to="bot")

    before = conversation(at(days=-20), status="resolved")
    message(before, "customer", at(days=-20))
    Rating.objects.create(conversation=before, score=1, comment="outside the period")
    return kim


def rows(datasets, name):
    return next(d for d in datasets if d.name == name).rows


def test_satisfaction(history):
    figures = satisfaction(PERIOD)
    # Ratings 5, 2 and 4 of the period: two of three are 4 or 5; three resolved conversations.
    assert rows(figures, "csat_summary") == [[66.7, 3, 3, 100.0]]
    assert rows(figures, "score_distribution") == [[1, 0], [2, 1], [3, 0], [4, 1], [5, 1]]
    assert [row[2] for row in rows(figures, "comments")] == ["slow", "great"]  # newest first, none empty
    assert [row[1] for row in rows(figures, "comments")] == [2, 5]
    low = satisfaction(Filters(start=PERIOD.start, end=PERIOD.end, comment_score=2))
    assert [row[2] for row in rows(low, "comments")] == ["slow"]


def test_csat_over_time_follows_the_grain_with_every_period_on_the_axis(history):
    daily = {row[0]: row[1:] for row in rows(satisfaction(PERIOD), "csat_over_time")}
    assert len(daily) == 30  # every day of November, rated or not
    # By the day each rated conversation started: 5 on Monday, 2 on Tuesday, 4 on Thursday.
    assert daily["2026-11-02"] == [1, 100.0] and daily["2026-11-03"] == [1, 0.0] and daily["2026-11-05"] == [1, 100.0]
    assert daily["2026-11-04"] == [0, None]
    weekly = rows(satisfaction(Filters(start=PERIOD.start, end=PERIOD.end, grain="week")), "csat_over_time")
    assert [row[0] for row in weekly] == [
        "2026-10-26",
        "2026-11-02",
        "2026-11-09",
        "2026-11-16",
        "2026-11-23",
        "2026-11-30",
    ]
    assert weekly[1][1:] == [3, 66.7]
    monthly = rows(satisfaction(Filters(start=PERIOD.start, end=PERIOD.end, grain="month")), "csat_over_time")
    assert monthly == [["2026-11-01", 3, 66.7]]


def test_volume_and_the_heatmap(history):
    figures = volume(PERIOD)
    days = {row[0]: row[1:] for row in rows(figures, "volume_over_time")}
    assert len(days) == 30
    assert [days[f"2026-11-0{d}"] for d in (2, 3, 4, 5)] == [[1, 2], [1, 3], [2, 3], [1, 2]]
    assert sum(c for c, _ in days.values()) == 5 and days["2026-11-30"] == [0, 0]
    heatmap = {row[0]: row[1:] for row in rows(figures, "heatmap")}
    assert heatmap["Mon"][10] == 1 and heatmap["Tue"][10] == 1
    assert heatmap["Wed"][11] == 1 and heatmap["Wed"][12] == 1 and heatmap["Thu"][9] == 1
    assert sum(sum(cells) for cells in heatmap.values()) == 5


def test_the_bot(history):
    figures = bot(PERIOD)
    # Resolved 3, two never handed off; handed off 2 of 5. First responses 2, 4, 10 and 6 s
    # (the fourth conversation has none): p50 5.0, p95 9.4. Resolutions 3600, 600 and 1800 s:
    # p50 1800, p95 3420.
    assert rows(figures, "bot_summary") == [[5, 66.7, 40.0, 5.0, 9.4, 1800.0, 3420.0]]
    assert sorted(rows(figures, "handoff_reasons")) == [
        ["The bot could not answer (out of attempts or no worker)", 1],
        ["The customer asked for a person", 1],
    ]


def test_agents(history):
    # Kim: one conversation, first reply 60 s after the handoff, resolved 540 s after it, rated 2.
    assert rows(agents(PERIOD), "agents") == [["kim", 1, 60.0, 540.0, 1, 0.0]]


def test_variants_side_by_side(history):
    table = {row[0]: row[1:] for row in rows(variants(PERIOD), "variants")}
    # 4-bit: answers with TTFT 100, 200, 400 (p50 200, p95 380), tokens/s 50, 40, 60, waits 10,
    # 20, 40 (p50 20, p95 38); one failure; rated 5 and 4; no handoff in its conversations.
    # None of them measured a first answer token or a reasoning, none was cut by a budget.
    assert table["gptq-int4"] == [3, 1, 200, 380, 50.0, 20, 38, 2, 100.0, 0.0, None, None, None, 0.0]
    assert table["fp16"] == [1, 0, 300, 300, 30.0, 30, 30, 1, 0.0, 100.0, None, None, None, 0.0]


def test_variants_show_the_time_to_the_first_answer_token_and_the_share_cut_by_the_budget(history):
    first = Conversation.objects.get(created_at=MONDAY)
    for seconds, ttfa, reasoning, cut in [(40, 900, 128, True), (80, 500, 40, False), (120, 700, 128, True)]:
        Message.objects.filter(pk=bot_answer(first, at(seconds=seconds), "gptq-int4", 100, 50, 10).pk).update(
            time_to_first_answer_token_ms=ttfa, reasoning_tokens=reasoning, reasoning_cut=cut
        )
    table = {
        row[0]: dict(zip(variants(PERIOD)[0].columns[1:], row[1:], strict=True))
        for row in rows(variants(PERIOD), "variants")
    }
    figures = table["gptq-int4"]
    assert figures["answers"] == 6
    # The three answers that measured it: 500, 700, 900 (p50 700, p95 880); reasoning 40, 128, 128.
    assert (figures["first answer token p50 ms"], figures["first answer token p95 ms"]) == (700, 880)
    assert figures["reasoning tokens p50"] == 128.0
    assert figures["cut by budget %"] == round(100 * 2 / 6, 1)


def test_variants_count_each_conversation_once_however_many_answers_it_has(history):
    first = Conversation.objects.get(created_at=MONDAY)
    bot_answer(first, at(seconds=40), "gptq-int4", 100, 50, 10)
    bot_answer(first, at(seconds=80), "gptq-int4", 100, 50, 10)
    table = {row[0]: row[1:] for row in rows(variants(PERIOD), "variants")}
    assert table["gptq-int4"][0] == 5  # answers
    assert table["gptq-int4"][7:10] == [2, 100.0, 0.0]  # still two rated conversations, CSAT, handoffs


def test_filters(history):
    only_fp16 = Filters(start=PERIOD.start, end=PERIOD.end, variant="fp16")
    assert rows(satisfaction(only_fp16), "csat_summary") == [[0.0, 1, 1, 100.0]]
    assert [row[0] for row in rows(variants(only_fp16), "variants")] == ["fp16"]
    by_agent = Filters(start=PERIOD.start, end=PERIOD.end, handled_by="agent")
    assert rows(bot(by_agent), "bot_summary")[0][0] == 1
    by_bot = Filters(start=PERIOD.start, end=PERIOD.end, handled_by="bot")
    assert rows(bot(by_bot), "bot_summary")[0][:3] == [4, 100.0, 25.0]
    kims = Filters(start=PERIOD.start, end=PERIOD.end, agent_id=history.pk)
    assert rows(satisfaction(kims), "csat_summary") == [[0.0, 1, 1, 100.0]]
    assert dataset(PERIOD, "agents").rows == rows(agents(PERIOD), "agents")
    assert dataset(PERIOD, "no-such-dataset") is None


@pytest.mark.skipif(os.environ.get("ANALYTICS_ON_SQLITE") == "1", reason="this is the SQLite run")
def test_the_same_figures_on_sqlite(tmp_path):
    env = dict(
        os.environ,
        ANALYTICS_ON_SQLITE="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'analytics.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/13",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/13",
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests/analytics/test_figures.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "9 passed, 1 skipped" in run.stdout
