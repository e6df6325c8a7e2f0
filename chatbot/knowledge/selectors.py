"""Reads of the knowledge base for the help pages."""

from __future__ import annotations

from django.db.models import QuerySet

from chatbot.knowledge.models import Article


def articles_published() -> QuerySet[Article]:
    return Article.objects.filter(published=True).only("slug", "title", "updated_at").order_by("title")


def article_for_page_get(*, slug: str, staff: bool) -> Article | None:
    """A published article; for staff, a draft too (their preview)."""
    articles = Article.objects.all() if staff else Article.objects.filter(published=True)
    return articles.filter(slug=slug).first()
