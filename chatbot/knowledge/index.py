"""The knowledge base's search index, kept in step with the articles: passages, the database's
full-text index (PostgreSQL tsvector + GIN, SQLite FTS5), each term's document frequency and the
passages' count and length. Called only by the services, inside their transaction and under the
lock on ``KnowledgeStats`` (``stats_locked``)."""

from __future__ import annotations

from collections import Counter

from django.contrib.postgres.search import SearchVector
from django.db import connection
from django.db.models import F, Value

from chatbot.knowledge import text
from chatbot.knowledge.models import Article, KnowledgePassage, KnowledgeStats, KnowledgeTerm
from chatbot.sql import column, table

FTS_TABLE = "knowledge_passage_fts"


def stats_locked() -> KnowledgeStats:
    """The stats row, locked until the transaction ends: every write to the index takes it first,
    so two edits never count the same term at once."""
    KnowledgeStats.objects.get_or_create(pk=1)
    return KnowledgeStats.objects.select_for_update().get(pk=1)


def passages_build(article: Article) -> list[KnowledgePassage]:
    """The article's passages as retrieval stores them (unsaved): one per text.sections entry."""
    built = []
    for position, section in enumerate(text.sections(article.body, title=article.title)):
        counts = text.term_counts(section)
        built.append(
            KnowledgePassage(
                article=article,
                position=position,
                anchor=section.anchor,
                heading=section.heading,
                text=section.text,
                terms=" ".join(term for term, n in counts.items() for _ in range(n)),
                length=sum(counts.values()),
            )
        )
    if connection.vendor == "postgresql":
        # The tsvector is written with the row (an UPDATE after would leave a dead copy of each).
        for passage in built:
            passage.search = SearchVector(Value(passage.terms), config="simple")
    return built


def article_unindex(*, article_id: int, stats: KnowledgeStats, delta: Counter) -> None:
    """Takes the article's passages out of the index and the stats; their terms' df changes go
    into ``delta`` (``df_change`` writes them)."""
    old = list(KnowledgePassage.objects.filter(article_id=article_id).values_list("pk", "terms", "length"))
    if not old:
        return
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {FTS_TABLE} WHERE rowid IN (SELECT id FROM {table(KnowledgePassage)} WHERE {column(KnowledgePassage, 'article')} = %s)",
                [article_id],
            )
    KnowledgePassage.objects.filter(article_id=article_id).delete()
    delta.update(_df_delta(old, -1))
    stats.passages -= len(old)
    stats.length -= sum(length for _, _, length in old)


def article_index(*, article: Article, stats: KnowledgeStats, delta: Counter) -> int:
    """Adds a published article's passages to the index and the stats; returns how many. Their
    terms' df changes go into ``delta``."""
    passages = KnowledgePassage.objects.bulk_create(passages_build(article))
    if not passages:
        return 0
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {FTS_TABLE} (rowid, terms) SELECT id, terms FROM {table(KnowledgePassage)} WHERE {column(KnowledgePassage, 'article')} = %s",
                [article.pk],
            )
    delta.update(_df_delta([(p.pk, p.terms, p.length) for p in passages], +1))
    stats.passages += len(passages)
    stats.length += sum(p.length for p in passages)
    return len(passages)


def _df_delta(rows: list[tuple[int, str, int]], sign: int) -> Counter:
    delta: Counter = Counter()
    for _, terms, _ in rows:
        for term in set(terms.split()):
            delta[term] += sign
    return delta


def df_change(delta: Counter) -> None:
    """Adds each term's change to its document frequency (one UPDATE per distinct amount), and
    forgets the terms no passage holds any longer."""
    by_amount: dict[int, list[str]] = {}
    for term, amount in delta.items():
        if amount:
            by_amount.setdefault(amount, []).append(term)
    new = [term for amount, terms in by_amount.items() if amount > 0 for term in terms]
    if new:
        KnowledgeTerm.objects.bulk_create([KnowledgeTerm(term=t, passages=0) for t in new], ignore_conflicts=True)
    # Increments first, so that a term's count never goes below 0 on the way.
    for amount in sorted(by_amount, reverse=True):
        KnowledgeTerm.objects.filter(term__in=by_amount[amount]).update(passages=F("passages") + amount)
    gone = [term for amount, terms in by_amount.items() if amount < 0 for term in terms]
    if gone:
        KnowledgeTerm.objects.filter(term__in=gone, passages__lte=0).delete()


def index_rebuild() -> KnowledgeStats:
    """Rebuilds the whole index from the published articles: their passages, the full-text index,
    every term's df and the stats (a repair, and the bench's bulk load)."""
    stats = stats_locked()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {FTS_TABLE}")
    KnowledgePassage.objects.all().delete()
    KnowledgeTerm.objects.all().delete()
    stats.passages = stats.length = 0
    df: Counter = Counter()
    batch: list[KnowledgePassage] = []
    for article in Article.objects.filter(published=True).iterator(chunk_size=500):
        batch.extend(passages_build(article))
        if len(batch) >= 5000:
            _bulk_add(batch, df, stats)
            batch = []
    _bulk_add(batch, df, stats)
    KnowledgeTerm.objects.bulk_create([KnowledgeTerm(term=t, passages=n) for t, n in df.items()], batch_size=5000)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {FTS_TABLE} (rowid, terms) SELECT id, terms FROM {table(KnowledgePassage)}")
    stats.version += 1
    stats.save()
    return stats


def _bulk_add(batch: list[KnowledgePassage], df: Counter, stats: KnowledgeStats) -> None:
    KnowledgePassage.objects.bulk_create(batch, batch_size=2000)
    for passage in batch:
        df.update(set(passage.terms.split()))
        stats.passages += 1
        stats.length += passage.length
