"""Every query of the analytics page on PostgreSQL with a large history:

    .venv/bin/python bench/analytics.py [--messages 1000000] [--runs 10] [--database chatbot_analytics_bench]

Drops and creates the database (on 127.0.0.1 as postgres), migrates it, writes seeded history
(`manage.py seed_demo_history`'s) until it holds `--messages` messages over 90 days, then times
each section of the page (each is a few queries) `--runs` times, for the whole 90 days and with
each kind of filter, and prints p50/p95/max per section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import time

from common import percentile, print_table, setup_django


def fresh_database(name: str) -> None:
    for command in (["dropdb", "--if-exists", name], ["createdb", name]):
        subprocess.run([*command[:-1], "-h", "127.0.0.1", "-U", "postgres", command[-1]], check=True)
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database", default="chatbot_analytics_bench")
    parser.add_argument("--keep", action="store_true", help="reuse the database if it holds the history already")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.keep:
        fresh_database(args.database)
    else:
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    setup_django()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from chatbot.analytics.seeding import seed_history
    from chatbot.analytics.selectors import SECTIONS, Filters
    from chatbot.conversations.models import Message

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    seed = 1
    while Message.objects.count() < args.messages:
        missing = args.messages - Message.objects.count()
        seed_history(conversations=max(100, int(missing / 3.3)), days=90, seed=seed)
        seed += 1
    seeded_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    stored = Message.objects.count()
    now = timezone.now()
    base = {"start": now - dt.timedelta(days=90), "end": now}
    from django.contrib.auth import get_user_model

    agent = get_user_model().objects.filter(username="kim").first()
    cases = {
        "90 days": Filters(**base),
        "90 days, by week": Filters(**base, grain="week"),
        "fp16 only": Filters(**base, variant="fp16"),
        "one agent": Filters(**base, agent_id=agent.pk if agent else None),
        "handled by the bot": Filters(**base, handled_by="bot"),
    }
    rows = []
    for case, filters in cases.items():
        for section, compute in SECTIONS.items():
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                compute(filters)
                times.append((time.perf_counter() - began) * 1000)
            rows.append(
                {
                    "filters": case,
                    "section": section,
                    "p50_ms": percentile(times, 50),
                    "p95_ms": percentile(times, 95),
                    "max_ms": max(times),
                }
            )
    report = {"messages": stored, "seeding_s": seeded_s, "runs": args.runs, "rows": rows}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{stored:,} messages in PostgreSQL (seeded in {seeded_s:.0f} s); {args.runs} runs per section\n")
    print_table(
        ["filters", "section", "p50 ms", "p95 ms", "max ms"],
        [[r["filters"], r["section"], r["p50_ms"], r["p95_ms"], r["max_ms"]] for r in rows],
    )


if __name__ == "__main__":
    main()
