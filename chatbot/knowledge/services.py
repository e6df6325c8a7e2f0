"""Writes to the knowledge base: saving an article (validated, with a revision, its passages and
the search index rebuilt in the same transaction), deleting one, importing a folder of Markdown
files, rebuilding the whole index."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from chatbot.knowledge import index, text
from chatbot.knowledge.models import Article, ArticleRevision, KnowledgeStats

SLUG_MAX_CHARS = Article._meta.get_field("slug").max_length
TITLE_MAX_CHARS = Article._meta.get_field("title").max_length
# A search term is a database key (and PostgreSQL indexes no word over 2,047 bytes).
WORD_MAX_CHARS = 200


def body_normalise(body: str) -> str:
    """Line ends as ``\\n``, no blank lines around, one final newline: as an imported file's body
    (text.parse_markdown_article), so that saving the same text twice is no change."""
    return (body or "").replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").strip() + "\n"


def article_validate(*, article: Article | None, slug: str, title: str, body: str) -> None:
    """Raises ValidationError with a message per field (``slug``, ``title``, ``body``) that
    staff can act on."""
    errors: dict[str, list[str]] = {}
    limit = settings.KNOWLEDGE_ARTICLE_MAX_CHARS
    if not slug:
        errors.setdefault("slug", []).append("An article needs a slug: its address, /help/<slug>.")
    else:
        try:
            validate_slug(slug)
        except ValidationError:
            errors.setdefault("slug", []).append(
                f"“{slug}” is not a valid slug: use only letters, digits, hyphens and underscores."
            )
        if len(slug) > SLUG_MAX_CHARS:
            errors.setdefault("slug", []).append(f"A slug has at most {SLUG_MAX_CHARS} characters.")
        duplicate = Article.objects.filter(slug=slug).exclude(pk=article.pk if article else None).first()
        if duplicate is not None:
            errors.setdefault("slug", []).append(
                f"Another article already has the slug “{slug}” (“{duplicate.title}”): choose another."
            )
    if not (title or "").strip():
        errors.setdefault("title", []).append("An article needs a title.")
    elif len(title.strip()) > TITLE_MAX_CHARS:
        errors.setdefault("title", []).append(f"A title has at most {TITLE_MAX_CHARS} characters.")
    if not (body or "").strip():
        errors.setdefault("body", []).append("An article needs a body: the text customers and the bot read.")
    elif len(body) > limit:
        errors.setdefault("body", []).append(
            f"The body has {len(body):,} characters; an article may have at most {limit:,} "
            "(KNOWLEDGE_ARTICLE_MAX_CHARS): split it into several articles."
        )
    else:
        long_word = next((w for w in text.words(body) if len(w) > WORD_MAX_CHARS), None)
        if long_word is not None:
            errors.setdefault("body", []).append(
                f"The body has a word of {len(long_word):,} characters (“{long_word[:20]}…”); "
                f"words may have at most {WORD_MAX_CHARS}."
            )
    if errors:
        raise ValidationError(errors)


def article_save(
    *, article: Article | None, slug: str, title: str, body: str, published: bool, user: Any = None
) -> Article:
    """Creates (``article`` None) or changes an article, validated (ValidationError per field);
    writes a revision and rebuilds the article's passages, the full-text index and the terms'
    document frequencies in the same transaction, so retrieval sees the change at once. Only a
    published article is searchable. Saving what is already there writes nothing.

    Takes the lock on the KnowledgeStats row (every write to the index does)."""
    slug, title = (slug or "").strip(), (title or "").replace("\x00", "").strip()
    article_validate(article=article, slug=slug, title=title, body=body)
    body = body_normalise(body)
    try:
        with transaction.atomic():
            stats = index.stats_locked()
            current = Article.objects.get(pk=article.pk) if article is not None and article.pk else None
            if current is not None and (current.slug, current.title, current.body, current.published) == (
                slug,
                title,
                body,
                published,
            ):
                return current
            if current is None:
                current = Article(slug=slug, title=title, body=body, published=published, revision=1, updated_by=user)
                current.save()
            else:
                current.slug, current.title, current.body, current.published = slug, title, body, published
                current.revision += 1
                current.updated_by = user
                current.save()
            ArticleRevision.objects.create(
                article=current,
                revision=current.revision,
                title=title,
                body=body,
                published=published,
                edited_by=user,
            )
            delta: Counter = Counter()
            index.article_unindex(article_id=current.pk, stats=stats, delta=delta)
            if published:
                index.article_index(article=current, stats=stats, delta=delta)
            index.df_change(delta)
            stats.version += 1
            stats.save()
            return current
    except IntegrityError as exc:
        # Another save took the slug between the check and the write.
        if Article.objects.filter(slug=slug).exclude(pk=article.pk if article else None).exists():
            raise ValidationError(
                {"slug": [f"Another article already has the slug “{slug}”: choose another."]}
            ) from exc
        raise


def article_delete(*, article: Article) -> None:
    """Deletes an article, its history and its passages; it leaves the index and the df counts
    at once. Takes the lock on the KnowledgeStats row."""
    with transaction.atomic():
        stats = index.stats_locked()
        delta: Counter = Counter()
        index.article_unindex(article_id=article.pk, stats=stats, delta=delta)
        index.df_change(delta)
        Article.objects.filter(pk=article.pk).delete()
        stats.version += 1
        stats.save()


def knowledge_index_rebuild() -> KnowledgeStats:
    """Rebuilds the passages, full-text index, df counts and stats of every published article."""
    with transaction.atomic():
        return index.index_rebuild()


# --- Import ------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    not_empty: bool = False  # --if-empty, and the knowledge base had articles: nothing was read


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return " ".join(message for messages in exc.message_dict.values() for message in messages)
    return " ".join(exc.messages)


def articles_import(*, folder: Path, draft: bool = False, if_empty: bool = False, user: Any = None) -> ImportReport:
    """Imports every ``*.md`` file of ``folder`` (slug: the file's name; title: its ``# Title``
    line): creates, updates (a new revision only if something changed) or leaves each article.
    A bad file is skipped with its reason and the rest imported. ``draft``: new articles are
    created unpublished (existing ones keep theirs). ``if_empty``: only into an empty base."""
    report = ImportReport()
    if if_empty and Article.objects.exists():
        report.not_empty = True
        return report
    for path in sorted(Path(folder).glob("*.md")):
        slug = path.stem
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            report.skipped.append((path.name, f"cannot be read as UTF-8 text ({exc.__class__.__name__})"))
            continue
        if not raw.strip():
            report.skipped.append((path.name, "the file is empty"))
            continue
        try:
            title, body = text.parse_markdown_article(raw)
        except ValueError as exc:
            report.skipped.append((path.name, str(exc)))
            continue
        if not re.fullmatch(r"[-a-zA-Z0-9_]+", slug):
            report.skipped.append(
                (path.name, f"the file name “{slug}” is not a valid slug (letters, digits, hyphens, underscores)")
            )
            continue
        existing = Article.objects.filter(slug=slug).first()
        published = existing.published if existing is not None else not draft
        before = existing.revision if existing is not None else None
        try:
            saved = article_save(article=existing, slug=slug, title=title, body=body, published=published, user=user)
        except ValidationError as exc:
            report.skipped.append((path.name, _error_text(exc)))
            continue
        if before is None:
            report.created.append(slug)
        elif saved.revision != before:
            report.updated.append(slug)
        else:
            report.unchanged.append(slug)
    return report
