from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chatbot.conversations.services.customer import visitor_id_ensure


@require_GET
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer chat page; gives the browser the session that identifies its conversations."""
    visitor_id_ensure(session=request.session)
    return render(
        request,
        "chat/index.html",
        {
            "ws_path": "/ws/chat/",
            "max_chars": settings.MESSAGE_MAX_CHARS,
            "rating_comment_max_chars": settings.RATING_COMMENT_MAX_CHARS,
            "store_name": settings.STORE_NAME,
        },
    )


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
