"""The knowledge base: help-center articles staff write, their history, and the passages
retrieval searches (one per ``## heading``, chatbot.knowledge.text.sections).

Only published articles have passages. Beside them the database keeps what relevance needs
(chatbot.knowledge.text.relevance): each search term's document frequency (``KnowledgeTerm``)
and the number and total length of the passages (``KnowledgeStats``), kept up to date by the
services in the same transaction as the passages themselves.

The full-text index is the database's own: on PostgreSQL ``KnowledgePassage.search`` (a tsvector
of the passage's search terms, GIN-indexed); on SQLite an FTS5 table, ``knowledge_passage_fts``
(rowid: the passage's id), which the migration creates only there.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.urls import reverse


class Article(models.Model):
    slug = models.SlugField(max_length=100, unique=True, help_text="The page's address: /help/<slug>")
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown: one passage per '## heading' and the text under it")
    published = models.BooleanField(default=True, help_text="Only published articles are shown and searched")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The number of the latest ArticleRevision (1 for a new article).
    revision = models.PositiveIntegerField(default=0, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["title"]
        indexes = [models.Index(fields=["published"], name="knowledge_article_published")]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("help_article", kwargs={"slug": self.slug})


class ArticleRevision(models.Model):
    """An article as one save left it: its history, one row per saved change."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="revisions")
    revision = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    body = models.TextField()
    published = models.BooleanField()
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-revision"]
        constraints = [models.UniqueConstraint(fields=["article", "revision"], name="knowledge_revision_unique")]

    def __str__(self) -> str:
        return f"{self.article_id} r{self.revision}"


class KnowledgePassage(models.Model):
    """One section of a published article, as retrieval finds it."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="passages")
    position = models.PositiveIntegerField()
    anchor = models.CharField(max_length=200)
    heading = models.CharField(max_length=500)
    text = models.TextField()
    # The passage's search terms as text.term_counts counts them (stems, the heading twice),
    # space-separated: what the full-text index holds, so both backends match the same terms.
    terms = models.TextField()
    length = models.PositiveIntegerField()  # sum of text.term_counts: BM25's length
    # PostgreSQL: to_tsvector('simple', terms), GIN-indexed (the migration). Null on SQLite.
    search = SearchVectorField(null=True)

    class Meta:
        ordering = ["article_id", "position"]
        constraints = [models.UniqueConstraint(fields=["article", "position"], name="knowledge_passage_unique")]


class KnowledgeTerm(models.Model):
    """A search term's document frequency: how many passages hold it."""

    term = models.CharField(max_length=200, primary_key=True)
    passages = models.PositiveIntegerField()


class KnowledgeStats(models.Model):
    """One row (pk 1): the searchable passages' count and total length, and a version bumped by
    every change. Its row lock serialises the knowledge base's writes (the df counts)."""

    passages = models.PositiveIntegerField(default=0)
    length = models.PositiveBigIntegerField(default=0)
    version = models.PositiveBigIntegerField(default=0)

    @property
    def avg_length(self) -> float:
        return self.length / self.passages if self.passages else 0.0
