"""The knowledge base's text, without Django: articles split into passages, search terms, the
relevance score and its cut-off, an in-memory index, and how passages enter the model's prompt.

The worker's prompt code, the web's retrieval (PostgreSQL full-text search, SQLite FTS5) and the
demo model's training all use these functions, so a passage is scored and shown to the model the
same way wherever it comes from.

**Relevance** is the database-independent part of retrieval. The database's full-text index only
finds candidates (passages sharing a word with the question); each candidate is then scored here:
the share of the question's known words (stems that occur somewhere in the knowledge base) that the
passage contains, each weighted by its inverse document frequency. A question made of words the
knowledge base never uses ("what is the capital of France?") scores 0 everywhere; a question whose
rare words ("refund") a passage holds scores high even if it also says "hi" and "please". Passages
under the cut-off (``KNOWLEDGE_MIN_RELEVANCE``) are not given to the model; when none is left the
prompt says so, and the bot says it does not know instead of guessing.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

# The product's defaults for KNOWLEDGE_MAX_PASSAGES and KNOWLEDGE_MIN_RELEVANCE; the demo model
# is trained with them.
DEFAULT_MAX_PASSAGES = 3
DEFAULT_MIN_RELEVANCE = 0.35

# A question shorter than this (in known words) is read with the customer's previous message,
# so "does it expire?" after a question about gift cards finds the gift card passages.
SHORT_QUESTION_WORDS = 3

STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing done don down during each else ever
    few for from further get gets got had has have having he her here hers him his how i if in
    into is it its itself just let me mine more most my myself no nor not now of off on once
    only or other our ours out over own please same she should so some such than thank thanks
    that the their theirs them then there these they this those through to too under until up
    us very was we were what when where which while who whom why will with would yes yet you
    your yours yourself hi hello hey ok okay dear sir madam want wanted would like need know
    tell help thx pls hii really actually maybe still currently hasn isn wasn haven won didn
    doesn aren weren couldn wouldn shouldn ve ll re""".split()
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SUFFIXES = ("ations", "ation", "ingly", "ings", "ing", "edly", "ed", "ies", "es", "ly", "s")


@functools.lru_cache(maxsize=65536)  # a pure function of one word: retrieval stems every candidate's words
def stem(word: str) -> str:
    """A light English stemmer (plural, -ing, -ed, -ly, -ation), enough to meet "refunds" with
    "refund" and "returning" with "return"; the same on every side, so it only has to be
    consistent, not linguistically right."""
    w = word.lower()
    if len(w) <= 3 or w.isdigit():
        return w
    for suffix in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            base = w[: -len(suffix)]
            if suffix == "ies":
                return base + "y"
            if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2]:
                base = base[:-1]  # "shipped" -> "ship"
            return base
    return w


def words(text: str) -> list[str]:
    """The text's words, lower-cased and NFKC-normalised, letters and digits only: nothing of
    the customer's text reaches a query but these words, always as parameters."""
    return [w.lower() for w in _WORD.findall(unicodedata.normalize("NFKC", text or ""))]


def terms(text: str) -> list[str]:
    """Distinct search terms (stems of the words that are not stop words), in order."""
    seen: dict[str, None] = {}
    for w in words(text):
        if w in STOPWORDS:
            continue
        seen.setdefault(stem(w), None)
    return list(seen)


def query_text(customer_messages: Sequence[str]) -> str:
    """What retrieval searches for: the customer's latest message, with the one before it when
    the latest is too short to stand alone (a follow-up such as "and does it expire?")."""
    if not customer_messages:
        return ""
    latest = customer_messages[-1]
    if len(terms(latest)) < SHORT_QUESTION_WORDS and len(customer_messages) > 1:
        return f"{customer_messages[-2]}\n{latest}"
    return latest


# --- Articles and passages -------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    anchor: str  # the heading as a URL fragment, unique within its article
    heading: str
    text: str
    keywords: str = ""  # the section's "Keywords:" line: words customers use, searched, not shown to the model


@dataclass(frozen=True)
class Passage:
    """One section of a published article, as retrieval returns it and the prompt shows it."""

    article_slug: str
    article_title: str
    anchor: str
    heading: str
    text: str
    relevance: float = 0.0
    article_id: int | None = None
    revision: int | None = None
    keywords: str = ""

    @property
    def key(self) -> str:
        return f"{self.article_slug}#{self.anchor}"

    @property
    def url(self) -> str:
        return f"/help/{self.article_slug}#{self.anchor}"

    def snapshot(self, number: int) -> dict:
        """What is stored with an answer: enough to show the passage later, as it was."""
        return {
            "n": number,
            "article_id": self.article_id,
            "revision": self.revision,
            "slug": self.article_slug,
            "title": self.article_title,
            "anchor": self.anchor,
            "heading": self.heading,
            "text": self.text,
            "relevance": round(self.relevance, 4),
            "url": self.url,
        }


KEYWORDS_LINE = re.compile(r"^\s*Keywords:\s*(.*)$", re.IGNORECASE)


def anchor_for(heading: str, taken: Iterable[str] = ()) -> str:
    base = "-".join(words(heading)) or "section"
    taken = set(taken)
    anchor, n = base, 2
    while anchor in taken:
        anchor, n = f"{base}-{n}", n + 1
    return anchor


def parse_markdown_article(markdown: str) -> tuple[str, str]:
    """(title, body) of a Markdown file whose first line is ``# Title``."""
    lines = (markdown or "").replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines = lines[1:]
    if not lines or not lines[0].startswith("# "):
        raise ValueError("the file must start with a '# Title' line")
    return lines[0][2:].strip(), "\n".join(lines[1:]).strip() + "\n"


def sections(body: str, *, title: str = "") -> list[Section]:
    """The passages of an article body: one per ``## heading`` with the text under it (Markdown
    markup as written, whitespace folded). Text before the first heading (an article's
    introduction) is a passage, headed by the article's title, only in an article without headings.

    A line ``Keywords: postage, delivery fee`` in a section gives the words customers use for it
    that its text does not (synonyms): retrieval searches them, the model is not shown them."""
    found: list[Section] = []
    heading, lines, keywords = title or "Overview", [], []

    def flush() -> None:
        text = " ".join(" ".join(lines).split())
        if text:
            found.append(Section(anchor_for(heading, (s.anchor for s in found)), heading, text, ", ".join(keywords)))

    for line in (body or "").replace("\r\n", "\n").split("\n"):
        match = re.match(r"^#{2,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            flush()
            heading, lines, keywords = match.group(1).strip() or "Section", [], []
        elif KEYWORDS_LINE.match(line):
            keywords.append(KEYWORDS_LINE.match(line).group(1).strip())
        else:
            lines.append(line.strip())
    flush()
    has_headings = any(re.match(r"^#{2,6}\s", line) for line in (body or "").split("\n"))
    if has_headings and found and not re.match(r"^#{2,6}\s", (body or "").lstrip()):
        found = found[1:] if found[0].heading == (title or "Overview") else found
    return found


# --- Relevance -------------------------------------------------------------------------------


def idf(df: int, total: int) -> float:
    return math.log(1.0 + total / df) if df > 0 else 0.0


def relevance(
    query: Sequence[str], passage: set[str] | frozenset[str] | Counter, df: Mapping[str, int], total: int
) -> float:
    """The idf-weighted share of the question's known terms (``df`` > 0) that the passage holds,
    0..1. Terms the knowledge base never uses carry no weight: they can't be matched anyway."""
    weights = {t: idf(df.get(t, 0), total) for t in query}
    known = sum(weights.values())
    if known <= 0:
        return 0.0
    return sum(w for t, w in weights.items() if t in passage) / known


def term_counts(passage: Passage | Section) -> Counter:
    """Each term's count in the passage, the heading's words counted twice (a heading says what
    the passage is about)."""
    counts = Counter()
    for w in words(f"{passage.heading} {passage.heading} {passage.text} {passage.keywords}"):
        if w not in STOPWORDS:
            counts[stem(w)] += 1
    return counts


def bm25(query: Sequence[str], counts: Counter, df: Mapping[str, int], total: int, avg_length: float) -> float:
    """Okapi BM25 (k1 1.2, b 0.75) over the same terms: the order among passages that pass."""
    length = sum(counts.values()) or 1
    score = 0.0
    for t in query:
        tf = counts.get(t, 0)
        if tf:
            score += idf(df.get(t, 0), total) * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / (avg_length or 1)))
    return score


def rank(
    query: str,
    candidates: Iterable[Passage],
    *,
    df: Mapping[str, int],
    total: int,
    avg_length: float,
    limit: int,
    min_relevance: float,
    counts: Sequence[Counter] | None = None,
) -> list[Passage]:
    """The best ``limit`` candidates at or above the relevance cut-off, best first by BM25 (ties:
    the order given). ``counts``: the candidates' term_counts, where the caller has them."""
    qterms = terms(query)
    scored = []
    for i, candidate in enumerate(candidates):
        counts_i = counts[i] if counts is not None else term_counts(candidate)
        score = relevance(qterms, counts_i, df, total)
        if score > 0 and score >= min_relevance:
            scored.append((-bm25(qterms, counts_i, df, total, avg_length), i, replace(candidate, relevance=score)))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [p for _, _, p in scored[:limit]]


class MemoryIndex:
    """Every passage in memory, scored one by one: for the demo model's training and evaluation,
    and the tests. Same terms, same relevance and cut-off as the database backends."""

    def __init__(self, passages: Iterable[Passage]):
        self.passages = list(passages)
        self.counts = [term_counts(p) for p in self.passages]
        self.df = Counter(t for c in self.counts for t in c)
        self.avg_length = sum(sum(c.values()) for c in self.counts) / max(1, len(self.counts))

    def search(self, query: str, *, limit: int, min_relevance: float, exclude: Iterable[str] = ()) -> list[Passage]:
        skip = set(exclude)
        chosen = [i for i, p in enumerate(self.passages) if p.key not in skip]
        return rank(
            query,
            [self.passages[i] for i in chosen],
            counts=[self.counts[i] for i in chosen],
            df=self.df,
            total=len(self.passages),
            avg_length=self.avg_length,
            limit=limit,
            min_relevance=min_relevance,
        )


def passages_from_folder(folder) -> list[Passage]:
    """The passages of every ``*.md`` article in a folder (slug: the file's name)."""
    from pathlib import Path

    found = []
    for path in sorted(Path(folder).glob("*.md")):
        title, body = parse_markdown_article(path.read_text(encoding="utf-8"))
        for section in sections(body, title=title):
            found.append(
                Passage(path.stem, title, section.anchor, section.heading, section.text, keywords=section.keywords)
            )
    return found


# --- The prompt ------------------------------------------------------------------------------

PASSAGES_HEADER = "Help center passages:"
NO_PASSAGES = "Help center passages: none found."
# As DeepSeek advises for R1, everything goes in the user turn (no system prompt). The demo model
# is trained with exactly this instruction; KNOWLEDGE_INSTRUCTION replaces it for a real model.
DEFAULT_INSTRUCTION = (
    "Answer only from these passages and cite the one you use as [n]. If none of them answers, say so."
)
CITATION = re.compile(r"\s?\[(\d{1,2})\]")


def passage_line(number: int, passage: Passage) -> str:
    """A passage as the prompt gives it, numbered at both ends: an answer that copies the
    passage's words ends on the number that follows them, so the citation comes from the passage
    it copied (numbered at the start only, the demo model cited another passage's number in up to
    7 of 55 edited articles; docs/demo-model.md)."""
    return f"[{number}] {passage.heading}: {passage.text} [{number}]"


def grounded_content(question: str, passages: Sequence[Passage], *, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The latest customer turn with its passages before it: what the model reads."""
    if passages:
        lines = [PASSAGES_HEADER, *(passage_line(n, p) for n, p in enumerate(passages, 1)), instruction]
    else:
        lines = [NO_PASSAGES, instruction]
    return "\n".join(lines) + f"\n\nQuestion: {question}"


def cited_numbers(answer: str, count: int) -> list[int]:
    """The passage numbers an answer cites (``[2]``), in order, only those that were given."""
    found: list[int] = []
    for match in CITATION.finditer(answer or ""):
        n = int(match.group(1))
        if 1 <= n <= count and n not in found:
            found.append(n)
    return found


def strip_citations(answer: str) -> str:
    """The answer without its ``[n]`` markers: how it is shown in later prompts, where its passages
    are no longer there."""
    return CITATION.sub("", answer or "").strip()
