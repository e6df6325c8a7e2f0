"""Knowledge-base retrieval with a large help center:

    .venv/bin/python bench/retrieval.py [--articles 10000] [--sections 8] [--queries 300] [--sqlite]
        [--database chatbot_retrieval_bench] [--json]

Drops and creates the PostgreSQL database (on 127.0.0.1 as postgres), migrates it, imports the
demo's articles and writes `--articles` generated ones (a Zipf-distributed vocabulary of made-up
words mixed with the demo's own, about `--sections` sections each), builds the search index, then
times `retrieve()` (the product's own call: the stats, the df lookup, the candidate query and
text.rank) on the demo's held-out questions, questions made from generated passages, and random
words. Prints p50/p95/max in ms per kind of question; `--sqlite` does the same on an SQLite file
(FTS5) in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, percentile, print_table, setup_django

SYLLABLES = "ka lo mi nu re sa ti vo ber dan fel gor hin jul kem lar mon nas pel qui ros sul tem vin wal zor".split()
STOPWORDS = "the a of to and is my can i how do what when where for with it on in".split()


def fresh_database(name: str) -> None:
    for command in (["dropdb", "--if-exists", name], ["createdb", name]):
        subprocess.run([*command[:-1], "-h", "127.0.0.1", "-U", "postgres", command[-1]], check=True)
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"


def vocabulary(rng: random.Random, size: int, demo_words: list[str]) -> tuple[list[str], list[float]]:
    """Made-up words and the demo's own, with Zipf weights (a few words are everywhere)."""
    made = set()
    while len(made) < size:
        made.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    words = sorted(made) + demo_words
    rng.shuffle(words)
    weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(words))]
    return words, weights


def generated_article(
    rng: random.Random, n: int, words: list[str], weights: list[float], sections: int
) -> tuple[str, str, str]:
    def phrase(k: int) -> str:
        picked = rng.choices(words, weights, k=k)
        return " ".join(w if rng.random() > 0.3 else f"{rng.choice(STOPWORDS)} {w}" for w in picked)

    title = phrase(rng.randint(2, 4)).capitalize()
    parts = [phrase(rng.randint(8, 15)).capitalize() + "."]
    for _ in range(max(1, sections + rng.randint(-2, 2))):
        parts.append(f"## {phrase(rng.randint(2, 4)).capitalize()}")
        parts.append(phrase(rng.randint(20, 50)).capitalize() + ".")
    return f"gen-{n:05d}", title, "\n\n".join(parts) + "\n"


def seed(args: argparse.Namespace) -> dict:

    from chatbot.knowledge import text
    from chatbot.knowledge.models import Article
    from chatbot.knowledge.services import articles_import, knowledge_index_rebuild

    rng = random.Random(args.seed)
    demo = ROOT / "chatbot" / "knowledge" / "demo_articles"
    started = time.perf_counter()
    articles_import(folder=demo)
    demo_words = sorted({w for p in text.passages_from_folder(demo) for w in text.words(f"{p.heading} {p.text}")})
    words, weights = vocabulary(rng, args.vocabulary, demo_words)
    batch = []
    for n in range(args.articles):
        slug, title, body = generated_article(rng, n, words, weights, args.sections)
        batch.append(Article(slug=slug, title=title, body=body, published=True, revision=1))
        if len(batch) == 2000:
            Article.objects.bulk_create(batch)
            batch = []
    Article.objects.bulk_create(batch)
    stats = knowledge_index_rebuild()
    settle()
    return {"passages": stats.passages, "seeding_s": time.perf_counter() - started, "words": words, "weights": weights}


def settle() -> None:
    """What autovacuum would have done by the time customers ask: the bulk load's dead rows gone,
    planner statistics fresh."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def reseed(args: argparse.Namespace) -> dict:
    """--keep with the articles there: the same vocabulary, nothing written."""
    from chatbot.knowledge import text
    from chatbot.knowledge.models import KnowledgeStats

    rng = random.Random(args.seed)
    demo = ROOT / "chatbot" / "knowledge" / "demo_articles"
    demo_words = sorted({w for p in text.passages_from_folder(demo) for w in text.words(f"{p.heading} {p.text}")})
    words, weights = vocabulary(rng, args.vocabulary, demo_words)
    settle()
    return {"passages": KnowledgeStats.objects.get(pk=1).passages, "seeding_s": 0.0, "words": words, "weights": weights}


def questions(args: argparse.Namespace, words: list[str], weights: list[float]) -> dict[str, list[str]]:
    from chatbot.knowledge.models import KnowledgePassage

    rng = random.Random(args.seed + 1)
    intents = json.loads((ROOT / "inference_worker" / "demo_model" / "data" / "intents.json").read_text())
    heldout = [q for intent in intents["intents"] for q in intent.get("heldout", [])]
    per_kind = max(1, args.queries // 3)
    ids = list(KnowledgePassage.objects.values_list("pk", flat=True))
    made = []
    for pk in rng.sample(ids, min(per_kind, len(ids))):
        passage_words = KnowledgePassage.objects.get(pk=pk).text.split()
        picked = rng.sample(passage_words, min(len(passage_words), rng.randint(3, 7)))
        made.append(f"{rng.choice(['how do I', 'what about', 'can I', 'where is'])} {' '.join(picked)}?")
    random_words = [" ".join(rng.choices(words, weights, k=rng.randint(2, 10))) for _ in range(per_kind)]
    return {"demo held-out": heldout[:per_kind], "from a passage": made, "random words": random_words}


def measure(args: argparse.Namespace) -> dict:
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    from chatbot.knowledge import retrieval
    from chatbot.knowledge.models import Article
    from chatbot.knowledge.retrieval import retrieve

    call_command("migrate", verbosity=0)
    if args.keep and Article.objects.filter(slug__startswith="gen-").count() == args.articles:
        seeded = reseed(args)
    else:
        seeded = seed(args)
    kinds = questions(args, seeded["words"], seeded["weights"])
    for question in kinds["demo held-out"][:20]:  # warm-up: connection, caches
        retrieve(question)
    if args.candidate_rows:
        retrieval.CANDIDATE_ROWS = args.candidate_rows
    rows = []
    every = []
    answers = {}
    for kind, asked in kinds.items():
        times, answered = [], 0
        for question in asked:
            began = time.perf_counter()
            found = retrieve(question)
            times.append((time.perf_counter() - began) * 1000)
            answered += bool(found)
            answers[question] = [p.key for p in found]
        every.extend(times)
        rows.append(_row(connection.vendor, kind, times, answered))
    rows.append(_row(connection.vendor, "all", every, None))
    if args.check:
        # The same questions with (nearly) no limit on the candidates: how often the bounded
        # candidate query gives the same answer.
        retrieval.CANDIDATE_ROWS, retrieval.CANDIDATES = 10**9, 500
        for row in rows:
            asked = [q for kind, qs in kinds.items() if row["questions"] in (kind, "all") for q in qs]
            row["same_top3"] = sum(answers[q] == [p.key for p in retrieve(q)] for q in asked) / len(asked)
    return {
        "backend": connection.vendor,
        "passages": seeded["passages"],
        "seeding_s": seeded["seeding_s"],
        "rows": rows,
    }


def _row(backend: str, kind: str, times: list[float], answered: int | None) -> dict:
    return {
        "backend": backend,
        "questions": kind,
        "n": len(times),
        "answered": answered,
        "p50_ms": percentile(times, 50),
        "p95_ms": percentile(times, 95),
        "max_ms": max(times) if times else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--sections", type=int, default=8)
    parser.add_argument("--vocabulary", type=int, default=20_000, help="made-up words besides the demo's")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", default="chatbot_retrieval_bench")
    parser.add_argument("--sqlite", action="store_true", help="also measure SQLite (FTS5), in a child process")
    parser.add_argument("--only-sqlite", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--candidate-rows", type=int, help="override retrieval.CANDIDATE_ROWS (tuning)")
    parser.add_argument(
        "--check", action="store_true", help="compare each answer with one from (nearly) unlimited candidates (slow)"
    )
    parser.add_argument("--keep", action="store_true", help="reuse the database if it holds the articles already")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.only_sqlite:
        os.environ["DATABASE_URL"] = f"sqlite:///{args.only_sqlite}"
        print(json.dumps(measure(args)))
        return
    if args.keep:
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    else:
        fresh_database(args.database)
    reports = [measure(args)]
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            child = [sys.executable, __file__, *sys.argv[1:], "--only-sqlite", str(Path(folder) / "kb.sqlite3")]
            env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            run = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            reports.append(json.loads(run.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps({"reports": reports}))
        return
    for report in reports:
        print(
            f"{report['backend']}: {report['passages']:,} passages (seeded and indexed in {report['seeding_s']:.0f} s)"
        )
    print()
    check = ["same top 3"] if args.check else []
    print_table(
        ["backend", "questions", "n", "answered", "p50 ms", "p95 ms", "max ms", *check],
        [
            [
                r["backend"],
                r["questions"],
                r["n"],
                "" if r["answered"] is None else r["answered"],
                r["p50_ms"],
                r["p95_ms"],
                r["max_ms"],
                *([f"{r['same_top3']:.0%}"] if args.check else []),
            ]
            for report in reports
            for r in report["rows"]
        ],
    )


if __name__ == "__main__":
    main()
