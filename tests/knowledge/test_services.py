"""article_save and article_delete: validation with messages staff can act on, one revision per
saved change, and the search index (passages, df counts, stats) kept equal to a fresh build."""

from __future__ import annotations

from collections import Counter

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from chatbot.knowledge import text
from chatbot.knowledge.models import Article, ArticleRevision, KnowledgePassage, KnowledgeStats, KnowledgeTerm
from chatbot.knowledge.services import article_delete, article_save, knowledge_index_rebuild

pytestmark = pytest.mark.django_db

BODY = "Intro.\n\n## Opening hours\n\nWe are open Monday to Friday.\n\n## Phone\n\nCall us on weekdays.\n"


def errors_of(**kwargs) -> dict[str, list[str]]:
    values = {"article": None, "slug": "hours", "title": "Hours", "body": BODY, "published": True, "user": None}
    values.update(kwargs)
    with pytest.raises(ValidationError) as caught:
        article_save(**values)
    return caught.value.message_dict


def index_state() -> tuple[dict[str, int], int, int]:
    stats = KnowledgeStats.objects.get(pk=1)
    return dict(KnowledgeTerm.objects.values_list("term", "passages")), stats.passages, stats.length


def fresh_state() -> tuple[dict[str, int], int, int]:
    """What the index should hold: computed from the published articles with text.py alone."""
    counts = [
        text.term_counts(section)
        for article in Article.objects.filter(published=True)
        for section in text.sections(article.body, title=article.title)
    ]
    df = Counter(term for c in counts for term in c)
    return dict(df), len(counts), sum(sum(c.values()) for c in counts)


def test_empty_title_and_body_are_refused_by_field(settings):
    errors = errors_of(title=" ", body="\n \n")
    assert errors["title"] == ["An article needs a title."]
    assert "needs a body" in errors["body"][0]
    assert not Article.objects.exists()


def test_a_body_over_the_limit_is_refused_naming_the_limit(settings):
    settings.KNOWLEDGE_ARTICLE_MAX_CHARS = 100
    (message,) = errors_of(body="x " * 60)["body"]
    assert "at most 100" in message and "KNOWLEDGE_ARTICLE_MAX_CHARS" in message


def test_slugs_must_be_slugs_and_unique():
    assert "not a valid slug" in errors_of(slug="no spaces/here")["slug"][0]
    assert "needs a slug" in errors_of(slug="")["slug"][0]
    article_save(article=None, slug="hours", title="Hours", body=BODY, published=True)
    (message,) = errors_of(title="Other")["slug"]
    assert "already has the slug “hours”" in message and "“Hours”" in message
    assert Article.objects.count() == 1


def test_each_saved_change_is_a_revision_and_saving_the_same_text_is_none():
    kim = User.objects.create_user("kim", is_staff=True)
    article = article_save(article=None, slug="hours", title="Hours", body=BODY, published=True, user=kim)
    assert (article.revision, article.updated_by) == (1, kim)
    # The admin's textarea sends \r\n: the same text is no change.
    same = article_save(article=article, slug="hours", title="Hours", body=BODY.replace("\n", "\r\n"), published=True)
    assert same.revision == 1
    changed = article_save(article=article, slug="hours", title="Opening hours", body=BODY, published=False)
    assert changed.revision == 2 and changed.updated_by is None
    history = list(ArticleRevision.objects.filter(article=article).values_list("revision", "title", "published"))
    assert history == [(2, "Opening hours", False), (1, "Hours", True)]


def test_passages_follow_the_sections_and_only_published_articles_are_indexed():
    article = article_save(article=None, slug="hours", title="Hours", body=BODY, published=True)
    passages = list(KnowledgePassage.objects.filter(article=article).values_list("position", "anchor", "heading"))
    assert passages == [(0, "opening-hours", "Opening hours"), (1, "phone", "Phone")]
    assert index_state() == fresh_state()
    article_save(article=article, slug="hours", title="Hours", body=BODY, published=False)
    assert not KnowledgePassage.objects.exists()
    assert index_state() == ({}, 0, 0)


def test_the_index_after_edits_and_deletes_equals_a_fresh_build(demo_articles):
    returns = Article.objects.get(slug="returns")
    article_save(
        article=returns,
        slug="returns",
        title=returns.title,
        body=returns.body + "\n## Refund speed\n\nRefunds to PayPal arrive within a day.\n",
        published=True,
    )
    article_delete(article=Article.objects.get(slug="contact"))
    article_save(article=Article.objects.get(slug="orders"), slug="orders", title="Orders", body=BODY, published=True)
    assert index_state() == fresh_state()
    assert knowledge_index_rebuild().passages == fresh_state()[1]
    assert index_state() == fresh_state()
