"""Reads of the knowledge base for the help pages."""

from __future__ import annotations

from django.db.models import QuerySet

from chatbot.knowledge.models import Article


def articles_published() -> QuerySet[Article]:
    return Article.objects.filter(published=True).only("slug", "title", "updated_at").order_by("title")


def article_published_get(*, slug: str) -> Article | None:
    return Article.objects.filter(published=True, slug=slug).first()
