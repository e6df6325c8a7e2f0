"""Retrieval: the knowledge base's passages for a customer's question.

One interface, two backends chosen by the database: PostgreSQL's full-text search (the passages'
tsvector, GIN-indexed) and SQLite's FTS5. The database only finds candidates, the passages that
share a search term with the question, best first by its own rank; text.rank() then scores them
(relevance and its cut-off, BM25 for the order) with the document frequencies, passage count and
average length kept in the database, so both backends give the same answer for the same data.

The customer's text never shapes the query: only its search terms (text.terms: letters and digits)
reach the database, always as bound parameters. Plain ORM and cursor calls: callable from the
worker's sync threads.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from chatbot.knowledge import text
from chatbot.knowledge.index import FTS_TABLE
from chatbot.knowledge.models import Article, KnowledgePassage, KnowledgeStats, KnowledgeTerm
from chatbot.sql import column, table

# Candidates the database hands to text.rank(): its best by its own rank.
CANDIDATES = 30
# The question's rarest terms that the candidate query searches for (a long message has many).
CANDIDATE_TERMS = 12
# A term held by more than this share of all passages, and by more than COMMON_TERM_PASSAGES,
# finds thousands of them and tells little apart: the candidate query leaves it out while the
# question has a rarer one. Such a term still counts in each candidate's relevance and BM25.
COMMON_TERM_SHARE = 0.05
COMMON_TERM_PASSAGES = 1000


def knowledge_base_active() -> bool:
    """Whether any article is published (one indexed EXISTS): with none, answers are not grounded."""
    return Article.objects.filter(published=True).exists()


def retrieve(query: str, *, limit: int | None = None, min_relevance: float | None = None) -> list[text.Passage]:
    """The passages that answer ``query``, best first: at most ``limit``
    (KNOWLEDGE_MAX_PASSAGES), none under ``min_relevance`` (KNOWLEDGE_MIN_RELEVANCE)."""
    limit = settings.KNOWLEDGE_MAX_PASSAGES if limit is None else limit
    min_relevance = settings.KNOWLEDGE_MIN_RELEVANCE if min_relevance is None else min_relevance
    qterms = text.terms(query)
    if not qterms or limit <= 0:
        return []
    stats = KnowledgeStats.objects.filter(pk=1).first()
    if stats is None or stats.passages == 0:
        return []
    df = document_frequencies(qterms)
    searched = candidate_terms(qterms, df, stats.passages)
    if not searched:
        return []
    candidates = _SEARCH.get(connection.vendor, _search_other)(searched)
    return text.rank(
        query,
        candidates,
        df=df,
        total=stats.passages,
        avg_length=stats.avg_length,
        limit=limit,
        min_relevance=min_relevance,
    )


def document_frequencies(terms: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(terms), 500):
        found.update(KnowledgeTerm.objects.filter(term__in=terms[start : start + 500]).values_list("term", "passages"))
    return found


def candidate_terms(qterms: list[str], df: dict[str, int], total: int) -> list[str]:
    """The terms the candidate query searches for: the question's terms the knowledge base holds,
    rarest first, at most CANDIDATE_TERMS, without the very common ones while a rarer one is left."""
    known = sorted((t for t in qterms if df.get(t)), key=lambda t: (df[t], t))
    common = max(COMMON_TERM_SHARE * total, COMMON_TERM_PASSAGES)
    rare = [t for t in known if df[t] <= common]
    return (rare or known)[:CANDIDATE_TERMS]


def _passages(rows) -> list[text.Passage]:
    return [
        text.Passage(
            article_slug=slug,
            article_title=title,
            anchor=anchor,
            heading=heading,
            text=body,
            article_id=article_id,
            revision=revision,
        )
        for _, article_id, slug, title, revision, anchor, heading, body in rows
    ]


def _search_postgresql(terms: list[str]) -> list[text.Passage]:
    passage, article = table(KnowledgePassage), table(Article)
    search, article_id = column(KnowledgePassage, "search"), column(KnowledgePassage, "article")
    sql = (
        f"SELECT p.id, p.{article_id}, a.slug, a.title, a.revision, p.anchor, p.heading, p.text "
        f"FROM {passage} p JOIN {article} a ON a.id = p.{article_id}, "
        "websearch_to_tsquery('simple', %s) q "
        f"WHERE p.{search} @@ q ORDER BY ts_rank(p.{search}, q) DESC, p.id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [" or ".join(terms), CANDIDATES])
        return _passages(cursor.fetchall())


def _search_sqlite(terms: list[str]) -> list[text.Passage]:
    passage, article = table(KnowledgePassage), table(Article)
    article_id = column(KnowledgePassage, "article")
    sql = (
        f"SELECT p.id, p.{article_id}, a.slug, a.title, a.revision, p.anchor, p.heading, p.text "
        f"FROM {FTS_TABLE} f JOIN {passage} p ON p.id = f.rowid JOIN {article} a ON a.id = p.{article_id} "
        f"WHERE {FTS_TABLE} MATCH %s ORDER BY f.rank, p.id LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [" OR ".join(f'"{t}"' for t in terms), CANDIDATES])
        return _passages(cursor.fetchall())


def _search_other(terms: list[str]) -> list[text.Passage]:
    """Any other database: every passage holding a term (no full-text index; small bases only)."""
    rows = []
    for p in KnowledgePassage.objects.select_related("article").order_by("id").iterator():
        if set(p.terms.split()) & set(terms):
            a = p.article
            rows.append((p.pk, a.pk, a.slug, a.title, a.revision, p.anchor, p.heading, p.text))
    return _passages(rows)


_SEARCH = {"postgresql": _search_postgresql, "sqlite": _search_sqlite}
