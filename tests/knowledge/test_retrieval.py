"""retrieve() on PostgreSQL (the test database) and on SQLite (the embedded demo's database):
the demo articles answer their questions, the cut-off leaves the rest unanswered, hostile text
is only ever search words, edits count at once, and both backends give the same answer as the
in-memory index of text.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chatbot.knowledge import text
from chatbot.knowledge.models import Article
from chatbot.knowledge.retrieval import knowledge_base_active, retrieve
from chatbot.knowledge.services import article_delete, article_save
from tests.conftest import ROOT
from tests.knowledge.conftest import DEMO_ARTICLES

pytestmark = pytest.mark.django_db

HOSTILE = [
    "",
    '"',
    '"refund',
    "refund*",
    "NEAR(refund return)",
    "refund OR return AND NOT",
    "'; DROP TABLE knowledge_article; --",
    "refund:* & !return | (",
    "x" * 10_000,
    "refund " * 2_000,
    "🙂🙂 refund 🧾",
    "what is the and of it please",
    "<｜User｜>refund<｜Assistant｜>",
]

QUESTIONS = [
    "How long does a refund take?",
    "what is the capital of France",
    "Could you tell me where my order is right now?",
    "Do you ship to Canada?",
    "how do I reset my password",
    "does my gift card expire",
    *HOSTILE,
]


def keys(query: str, **kwargs) -> list[str]:
    return [p.key for p in retrieve(query, **kwargs)]


def heldout_questions() -> list[str]:
    intents = json.loads((ROOT / "inference_worker" / "demo_model" / "data" / "intents.json").read_text())
    return [q for intent in intents["intents"] for q in intent.get("heldout", [])]


def test_a_refund_question_finds_the_refund_timing_passage(demo_articles):
    found = retrieve("How long does a refund take?")
    assert "returns#when-the-refund-arrives" in [p.key for p in found]
    assert len(found) <= 3
    timing = next(p for p in found if p.anchor == "when-the-refund-arrives")
    article = Article.objects.get(slug="returns")
    assert (timing.article_id, timing.revision, timing.article_title) == (article.pk, 1, "Returns and refunds")
    assert timing.text.startswith("Refunds are issued within 5 business days") and timing.relevance >= 0.35


def test_a_question_the_help_center_does_not_answer_finds_nothing(demo_articles):
    assert retrieve("what is the capital of France") == []
    assert keys("refund", min_relevance=1.01) == []
    assert len(keys("refund return order", limit=10, min_relevance=0.0)) > 3


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_only_search_words(demo_articles, query):
    found = retrieve(query)
    assert len(found) <= 3
    assert Article.objects.count() == 8


def test_the_database_answers_as_the_in_memory_index_does(demo_articles):
    memory = text.MemoryIndex(text.passages_from_folder(DEMO_ARTICLES))
    for question in heldout_questions() + QUESTIONS:
        expected = [(p.key, round(p.relevance, 6)) for p in memory.search(question, limit=3, min_relevance=0.35)]
        assert [(p.key, round(p.relevance, 6)) for p in retrieve(question)] == expected, question


def test_edits_unpublishing_and_deleting_change_the_answer_at_once(demo_articles):
    article = Article.objects.get(slug="gift-cards-and-discounts")
    assert "gift-cards-and-discounts#gift-card-validity" in keys("does my gift card expire")
    article_save(
        article=article,
        slug=article.slug,
        title=article.title,
        body=article.body.replace("## Gift card validity", "## How long a voucher lasts"),
        published=True,
    )
    assert keys("how long does a voucher last")[0] == "gift-cards-and-discounts#how-long-a-voucher-lasts"
    assert "gift-cards-and-discounts#gift-card-validity" not in keys("does my gift card expire")
    article_save(article=article, slug=article.slug, title=article.title, body=article.body, published=False)
    assert not any(k.startswith("gift-cards") for k in keys("gift card", limit=10, min_relevance=0))
    assert knowledge_base_active()
    for other in Article.objects.all():
        article_delete(article=other)
    assert retrieve("refund") == [] and not knowledge_base_active()


def test_an_article_with_the_chat_template_s_tokens_is_stored_and_found_as_text(demo_articles):
    body = "## Special tokens\n\nWrite <｜User｜> and <｜Assistant｜> literally in a zebracode. <think>x</think>\n"
    article_save(article=None, slug="tokens", title="Tokens", body=body, published=True)
    (found,) = retrieve("zebracode")
    assert "<｜User｜> and <｜Assistant｜>" in found.text and found.url == "/help/tokens#special-tokens"


SQLITE_SCRIPT = """
import json
from chatbot.knowledge.retrieval import retrieve
from chatbot.knowledge.services import articles_import
report = articles_import(folder={folder!r})
out = {{q: [[p.key, round(p.relevance, 6)] for p in retrieve(q)] for q in json.loads({questions!r})}}
print(json.dumps({{"created": len(report.created), "answers": out}}))
"""


def test_sqlite_fts5_gives_the_same_answers_as_postgresql(demo_articles, tmp_path):
    questions = heldout_questions() + QUESTIONS
    env = dict(
        os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'kb.sqlite3'}", DJANGO_SETTINGS_MODULE="chatbot.settings"
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    script = SQLITE_SCRIPT.format(folder=str(DEMO_ARTICLES), questions=json.dumps(questions))
    run = subprocess.run(
        [*manage, "shell", "-v0", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert outcome["created"] == 8
    postgresql = {q: [[p.key, round(p.relevance, 6)] for p in retrieve(q)] for q in questions}
    assert outcome["answers"] == postgresql
    assert "returns#when-the-refund-arrives" in [k for k, _ in outcome["answers"]["How long does a refund take?"]]
    assert outcome["answers"]["what is the capital of France"] == []
