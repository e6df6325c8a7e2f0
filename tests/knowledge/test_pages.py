"""The public help center: published articles only, the body rendered from Markdown with every
piece escaped (raw HTML shown as text, javascript: links dropped), headings carrying the
passages' anchors, the search through retrieval, and the site's Content-Security-Policy."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from chatbot.knowledge import text
from chatbot.knowledge.markdown import render, safe_url
from chatbot.knowledge.models import Article
from chatbot.knowledge.services import article_save

pytestmark = pytest.mark.django_db

HOSTILE_BODY = """Intro <b>bold tag</b>.

## Links & <script>alert("h")</script>

Click [here](javascript:alert(1)) or [there](JAVASCRIPT:alert(2)) or [data](data:text/html,x)
or [safe](https://example.com/?a=1&b=2) or [page](/help/returns#refunds).
<img src=x onerror="alert(3)"> and `<code>` and **strong** and *em*.

## Steps

1. First <iframe src="//evil">
2. Second

- one
- two

## Tokens

<｜User｜> and <｜Assistant｜> are text.
"""


def test_the_index_lists_published_articles_and_searches(client, demo_articles):
    article_save(article=None, slug="secret", title="Secret draft", body="## Draft\n\nNot yet.\n", published=False)
    page = client.get("/help/").content.decode()
    assert "Returns and refunds" in page and "Secret draft" not in page
    page = client.get("/help/", {"q": "How long does a refund take?"}).content.decode()
    assert 'href="/help/returns#when-the-refund-arrives"' in page
    page = client.get("/help/", {"q": "what is the capital of France"}).content.decode()
    assert "Nothing in the help center answers that" in page
    assert client.get("/help/", {"q": "<script>x</script>"}).content.decode().count("<script>x") == 0


def test_an_article_page_escapes_html_and_drops_unsafe_links(client):
    article_save(article=None, slug="hostile", title="<i>Title</i>", body=HOSTILE_BODY, published=True)
    response = client.get("/help/hostile")
    assert response.status_code == 200
    page = response.content.decode()
    main = page[page.index('<main class="help__article">') : page.index("</main>")]
    assert "<script" not in main and "<img" not in main and "<iframe" not in main and "<b>" not in main
    assert "&lt;script&gt;alert(&quot;h&quot;)&lt;/script&gt;" in main and "&lt;img src=x" in main
    assert not re.search(r'href="\s*(javascript|data):', main, re.IGNORECASE)
    assert '<a href="https://example.com/?a=1&amp;b=2"' in main and '<a href="/help/returns#refunds"' in main
    assert "<strong>strong</strong>" in main and "<em>em</em>" in main and "<code>&lt;code&gt;</code>" in main
    assert "<ol><li>First &lt;iframe" in main and "<ul><li>one</li><li>two</li></ul>" in main
    assert "&lt;｜User｜&gt; and &lt;｜Assistant｜&gt; are text." in main
    assert "&lt;i&gt;Title&lt;/i&gt;" in page
    # Each heading carries its passage's anchor.
    anchors = [s.anchor for s in text.sections(Article.objects.get().body, title="<i>Title</i>")]
    assert re.findall(r'<h2 id="([^"]+)"', main) == anchors == ["links-script-alert-h-script", "steps", "tokens"]
    # The site's policy: no inline script or style on the page.
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<style" not in page and " style=" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)


def test_demo_article_headings_carry_every_passage_anchor(client, demo_articles):
    for article in Article.objects.all():
        page = client.get(f"/help/{article.slug}").content.decode()
        ids = re.findall(r'<h\d id="([^"]+)"', page)
        assert ids == [s.anchor for s in text.sections(article.body, title=article.title)], article.slug


def test_drafts_and_unknown_articles_are_404_except_drafts_to_staff(client):
    article = article_save(article=None, slug="draft", title="Draft", body="## A\n\nB\n", published=False)
    assert client.get("/help/draft").status_code == 404
    assert client.get("/help/nothing-here").status_code == 404
    article_save(article=article, slug="draft", title="Draft", body="## A\n\nB\n", published=True)
    assert client.get("/help/draft").status_code == 200
    article_save(article=article, slug="draft", title="Draft", body="## A\n\nB\n", published=False)
    client.force_login(User.objects.create_user("kim", is_staff=True))
    assert "only staff see this page" in client.get("/help/draft").content.decode()  # their preview


@pytest.mark.parametrize(
    "url,kept",
    [
        ("https://example.com", True),
        ("http://example.com", True),
        ("/help/x#y", True),
        ("#anchor", True),
        ("relative/page", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("data:text/html,x", False),
        ("vbscript:x", False),
        ("mailto:a@b.c", False),
        ("\\\\evil.example", False),
    ],
)
def test_only_http_and_relative_links_are_kept(url, kept):
    assert (safe_url(url) is not None) is kept


def test_nul_characters_are_dropped_not_mistaken_for_markup(client):
    article_save(article=None, slug="nul", title="N\x00UL", body="## A\n\nx \x000\x00 `c` \x005\x00\n", published=True)
    page = client.get("/help/nul").content.decode()
    assert "x 0 <code>c</code> 5" in page and "NUL" in page


def test_headings_without_text_get_free_anchors():
    html = render("## Empty\n\n## Full\n\nText.\n\n## Full\n\nMore.\n", title="T")
    assert re.findall(r'id="([^"]+)"', html) == ["empty", "full", "full-2"]
