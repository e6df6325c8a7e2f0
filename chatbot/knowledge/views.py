"""The public help center: the list of published articles with a search (retrieval), and each
article rendered from its Markdown (escaped first: chatbot/knowledge/markdown.py)."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chatbot.knowledge import markdown, selectors
from chatbot.knowledge.retrieval import retrieve

SEARCH_MAX_CHARS = 500
SEARCH_RESULTS = 10


def help_index(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:SEARCH_MAX_CHARS].strip()
    results = retrieve(query, limit=SEARCH_RESULTS) if query else []
    return render(
        request,
        "help/index.html",
        {
            "store_name": settings.STORE_NAME,
            "articles": selectors.articles_published(),
            "query": query,
            "results": results,
        },
    )


def help_article(request: HttpRequest, slug: str) -> HttpResponse:
    article = selectors.article_for_page_get(slug=slug, staff=request.user.is_staff)
    if article is None:
        raise Http404("No such article")
    return render(
        request,
        "help/article.html",
        {
            "store_name": settings.STORE_NAME,
            "article": article,
            "body": markdown.render(article.body, title=article.title),
        },
    )
