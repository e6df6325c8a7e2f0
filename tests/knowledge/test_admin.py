"""Staff write articles in the admin: the form shows the service's errors by field (empty,
too long, duplicate slug), a valid article is saved through the service (revision, search index),
the history is shown read-only, and the list links to the public page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from chatbot.knowledge.models import Article, ArticleRevision
from chatbot.knowledge.retrieval import retrieve
from chatbot.knowledge.services import article_save

pytestmark = pytest.mark.django_db
ADD = "/admin/knowledge/article/add/"


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("root", password="pw")
    client.force_login(user)
    return user


def form(**values) -> dict[str, object]:
    data = {
        "title": "Opening hours",
        "slug": "hours",
        "published": "on",
        "body": "## When we are open\r\n\r\nMonday to Friday, zebrahours included.\r\n",
        "revisions-TOTAL_FORMS": "0",
        "revisions-INITIAL_FORMS": "0",
    }
    data.update(values)
    return data


def test_a_valid_article_is_saved_through_the_service(client, staff):
    response = client.post(ADD, form())
    assert response.status_code == 302, response.content.decode()[:3000]
    article = Article.objects.get()
    assert (article.slug, article.revision, article.updated_by, article.body) == (
        "hours",
        1,
        staff,
        "## When we are open\n\nMonday to Friday, zebrahours included.\n",
    )
    assert [p.key for p in retrieve("zebrahours")] == ["hours#when-we-are-open"]
    change = f"/admin/knowledge/article/{article.pk}/change/"
    response = client.post(
        change,
        form(
            body="## When we are open\r\n\r\nEvery day.\r\n",
            **{
                "revisions-TOTAL_FORMS": "1",
                "revisions-INITIAL_FORMS": "1",
                "revisions-0-id": str(ArticleRevision.objects.get().pk),
                "revisions-0-article": str(article.pk),
            },
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Article.objects.get().revision == 2 and retrieve("zebrahours") == []
    page = client.get(change).content.decode()
    assert "History (one revision per saved change)" in page and "zebrahours included" in page  # revision 1's text
    assert "/help/hours" in page  # View on site
    listing = client.get("/admin/knowledge/article/?q=hours").content.decode()
    assert 'href="/help/hours"' in listing


@pytest.mark.parametrize(
    "values,field,message",
    [
        ({"title": " "}, "title", "An article needs a title."),
        ({"body": "  "}, "body", "An article needs a body"),
        ({"body": "x" * 201}, "body", "at most 200 (KNOWLEDGE_ARTICLE_MAX_CHARS)"),
        ({"slug": "not a slug"}, "slug", "is not a valid slug"),
        ({"slug": "taken"}, "slug", "Another article already has the slug “taken” (“Taken”)"),
    ],
)
def test_the_form_shows_each_error_by_its_field(client, staff, settings, values, field, message):
    settings.KNOWLEDGE_ARTICLE_MAX_CHARS = 200
    article_save(article=None, slug="taken", title="Taken", body="Text.", published=True)
    response = client.post(ADD, form(**values))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(message in error for error in errors[field]), errors
    assert message.split("“")[0] in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert Article.objects.count() == 1


def test_deleting_in_the_admin_takes_the_article_out_of_retrieval(client, staff):
    article = article_save(article=None, slug="hours", title="Hours", body="## Open\n\nzebrahours.\n", published=True)
    response = client.post(f"/admin/knowledge/article/{article.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Article.objects.exists() and retrieve("zebrahours") == []
