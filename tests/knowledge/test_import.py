"""`manage.py import_articles`: creates, updates with a new revision only when changed, leaves
the rest; a bad file is skipped with its reason and the others still imported."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from chatbot.knowledge.models import Article, KnowledgePassage

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_articles", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(folder, name: str, content: str) -> None:
    (folder / name).write_text(content, encoding="utf-8")


def test_create_update_unchanged_and_bad_files(tmp_path, settings):
    settings.KNOWLEDGE_ARTICLE_MAX_CHARS = 500
    write(tmp_path, "shipping.md", "# Shipping\n\n## Costs\n\nFree from €50.\n")
    write(tmp_path, "returns.md", "# Returns\n\n## Window\n\n30 days.\n")
    write(tmp_path, "no-title.md", "Just text, no title line.\n")
    write(tmp_path, "empty.md", "\n\n")
    write(tmp_path, "too-big.md", "# Big\n\n" + "word " * 200)
    write(tmp_path, "bad name.md", "# Bad name\n\nText.\n")
    write(tmp_path, "notes.txt", "# Not markdown\n\nIgnored.\n")
    out, err = run(str(tmp_path))
    assert "2 created, 0 updated, 0 unchanged, 4 skipped" in out
    assert "skipped no-title.md: the file must start with a '# Title' line" in err
    assert "skipped empty.md: the file is empty" in err
    assert "skipped too-big.md:" in err and "at most 500" in err
    assert "skipped bad name.md: the file name “bad name” is not a valid slug" in err
    assert sorted(Article.objects.values_list("slug", "title", "revision", "published")) == [
        ("returns", "Returns", 1, True),
        ("shipping", "Shipping", 1, True),
    ]

    write(tmp_path, "shipping.md", "# Shipping\n\n## Costs\n\nFree from €40.\n")
    out, _ = run(str(tmp_path))
    assert "0 created, 1 updated, 1 unchanged, 4 skipped" in out
    shipping = Article.objects.get(slug="shipping")
    assert shipping.revision == 2 and shipping.revisions.count() == 2
    assert KnowledgePassage.objects.get(article=shipping).text == "Free from €40."


def test_draft_and_if_empty(tmp_path):
    write(tmp_path, "shipping.md", "# Shipping\n\n## Costs\n\nFree from €50.\n")
    out, _ = run(str(tmp_path), "--draft")
    assert "1 created" in out
    assert Article.objects.get().published is False and not KnowledgePassage.objects.exists()
    write(tmp_path, "returns.md", "# Returns\n\n## Window\n\n30 days.\n")
    out, _ = run(str(tmp_path), "--if-empty")
    assert "nothing imported" in out and Article.objects.count() == 1


def test_the_demo_articles_import_cleanly(demo_articles):
    assert len(demo_articles.created) == 8 and Article.objects.filter(published=True).count() == 8
