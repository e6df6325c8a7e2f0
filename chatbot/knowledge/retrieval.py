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

from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from chatbot.knowledge import text
from chatbot.knowledge.index import FTS_TABLE
from chatbot.knowledge.models import Article, KnowledgePassage, KnowledgeStats, KnowledgeTerm
from chatbot.sql import column, placeholders, table

# Candidates the database hands to text.rank(): its best by its own rank.
CANDIDATES = 30
# The question's rarest terms that the candidate query may search for (a long message has many).
CANDIDATE_TERMS = 12
# Passages the database may rank for one question: ranking reads each one's tsvector, so the
# time grows with them. The query takes the question's rarest terms while together they hold at
# most this many (text.rank still weighs every term of the question in each candidate).
CANDIDATE_ROWS = 500


@dataclass(frozen=True)
class CandidateQuery:
    terms: list[str]
    match_all: bool  # passages holding every term (else: any)
    ranked: bool  # ordered by relevance, then the database's rank (else by id: too many to rank)
    # (term, idf) of the question's known terms: the database orders the candidates by the sum of
    # the weights of the terms each holds, text.relevance's numerator, then by its own rank.
    weights: tuple[tuple[str, float], ...] = ()


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
    total, length, df = statistics(qterms)
    if total == 0:
        return []
    searched = candidate_query(qterms, df, total)
    if searched is None:
        return []
    candidates, counts = _SEARCH.get(connection.vendor, _search_other)(searched)
    return text.rank(
        query,
        candidates,
        counts=counts,
        df=df,
        total=total,
        avg_length=length / total,
        limit=limit,
        min_relevance=min_relevance,
    )


def statistics(terms: list[str]) -> tuple[int, int, dict[str, int]]:
    """(passages, their total length, each term's document frequency) in one round trip (the
    terms of a very long message in a few)."""
    stats, term = table(KnowledgeStats), table(KnowledgeTerm)
    total, length, df = 0, 0, {}
    for start in range(0, len(terms), 500):
        chunk = terms[start : start + 500]
        sql = f"SELECT term, passages, 0 FROM {term} WHERE term IN ({placeholders(chunk)})"
        if start == 0:
            sql = f"SELECT NULL, passages, length FROM {stats} WHERE id = 1 UNION ALL {sql}"
        with connection.cursor() as cursor:
            cursor.execute(sql, chunk)
            for name, passages, passages_length in cursor.fetchall():
                if name is None:
                    total, length = passages, passages_length
                else:
                    df[name] = passages
    return total, length, df


def candidate_query(qterms: list[str], df: dict[str, int], total: int) -> CandidateQuery | None:
    """What the database searches for: the question's rarest known terms (at most
    CANDIDATE_TERMS), as many as together hold at most CANDIDATE_ROWS passages, any of them. When
    even the rarest is in more passages than that (a question of very common words only, in a
    large help center), the passages that hold all of the rarest few, as few as bring the
    expected number under CANDIDATE_ROWS; still too many, they are not ranked but taken by id.
    On a help center of up to CANDIDATE_ROWS passages this is every known term: each passage
    that shares a term with the question is a candidate."""
    known = sorted((t for t in qterms if df.get(t)), key=lambda t: (df[t], t))[:CANDIDATE_TERMS]
    if not known:
        return None
    chosen, rows = [], 0
    for term in known:
        if chosen and rows + df[term] > CANDIDATE_ROWS:
            break
        chosen.append(term)
        rows += df[term]
    weights = tuple((t, round(text.idf(df[t], total), 6)) for t in known)
    if rows <= CANDIDATE_ROWS:
        return CandidateQuery(chosen, match_all=False, ranked=True, weights=weights)
    expected, chosen = float(total), []
    for term in known:
        chosen.append(term)
        expected *= df[term] / total
        if len(chosen) >= 2 and expected <= CANDIDATE_ROWS:
            break
    return CandidateQuery(chosen, match_all=True, ranked=expected <= CANDIDATE_ROWS, weights=weights)


Candidates = tuple[list[text.Passage], list[Counter]]


def _passages(rows) -> Candidates:
    """The candidates and their term counts as stored (text.term_counts at indexing: the
    heading, the text and the section's keywords, which the model is not shown)."""
    passages = [
        text.Passage(
            article_slug=slug,
            article_title=title,
            anchor=anchor,
            heading=heading,
            text=body,
            article_id=article_id,
            revision=revision,
        )
        for _, article_id, slug, title, revision, anchor, heading, body, _ in rows
    ]
    return passages, [Counter(terms.split()) for *_, terms in rows]


def _search_postgresql(query: CandidateQuery) -> Candidates:
    passage, article = table(KnowledgePassage), table(Article)
    search, article_id = column(KnowledgePassage, "search"), column(KnowledgePassage, "article")
    held = " + ".join(
        [f"CASE WHEN p.{search} @@ plainto_tsquery('simple', %s) THEN %s ELSE 0 END"] * len(query.weights)
    )
    order = f"{held} DESC, ts_rank(p.{search}, q) DESC, p.id" if query.ranked else "p.id"
    sql = (
        f"SELECT p.id, p.{article_id}, a.slug, a.title, a.revision, p.anchor, p.heading, p.text, p.terms "
        f"FROM {passage} p JOIN {article} a ON a.id = p.{article_id}, websearch_to_tsquery('simple', %s) q "
        f"WHERE p.{search} @@ q ORDER BY {order} LIMIT %s"
    )
    searched = (" " if query.match_all else " or ").join(query.terms)
    params = [searched, *(_weight_params(query) if query.ranked else []), CANDIDATES]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _passages(cursor.fetchall())


def _search_sqlite(query: CandidateQuery) -> Candidates:
    passage, article = table(KnowledgePassage), table(Article)
    article_id = column(KnowledgePassage, "article")
    # FTS5 keeps each row's text: a term is held where " term " is in " terms ".
    held = " + ".join(["CASE WHEN instr(' ' || f.terms || ' ', %s) > 0 THEN %s ELSE 0 END"] * len(query.weights))
    order = f"{held} DESC, f.rank, p.id" if query.ranked else "p.id"
    sql = (
        f"SELECT p.id, p.{article_id}, a.slug, a.title, a.revision, p.anchor, p.heading, p.text, p.terms "
        f"FROM {FTS_TABLE} f JOIN {passage} p ON p.id = f.rowid JOIN {article} a ON a.id = p.{article_id} "
        f"WHERE {FTS_TABLE} MATCH %s ORDER BY {order} LIMIT %s"
    )
    searched = (" AND " if query.match_all else " OR ").join(f'"{t}"' for t in query.terms)
    weights = [f" {value} " if i % 2 == 0 else value for i, value in enumerate(_weight_params(query))]
    params = [searched, *(weights if query.ranked else []), CANDIDATES]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _passages(cursor.fetchall())


def _weight_params(query: CandidateQuery) -> list:
    return [value for term, weight in query.weights for value in (term, weight)]


def _search_other(query: CandidateQuery) -> Candidates:
    """Any other database: every passage holding a term (no full-text index; small bases only)."""
    rows = []
    for p in KnowledgePassage.objects.select_related("article").order_by("id").iterator():
        held = set(p.terms.split()) & set(query.terms)
        if held and (not query.match_all or held == set(query.terms)):
            a = p.article
            rows.append((p.pk, a.pk, a.slug, a.title, a.revision, p.anchor, p.heading, p.text, p.terms))
    return _passages(rows)


_SEARCH = {"postgresql": _search_postgresql, "sqlite": _search_sqlite}
