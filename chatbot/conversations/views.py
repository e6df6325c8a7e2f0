from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chatbot.conversations.limits import client_address
from chatbot.conversations.services.customer import NewVisitorRefused, visitor_id_ensure

NEW_VISITORS_REFUSED = (
    "Too many new chats were started from your network in the last hour. Please try again later, "
    "or continue in the browser where you started your chat."
)


@require_GET
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer chat page; gives the browser the session that identifies its conversations
    (a new one counts against its address's ADDRESS_MAX_NEW_VISITORS_PER_HOUR)."""
    address = client_address(peer=request.META.get("REMOTE_ADDR"), forwarded_for=request.headers.get("X-Forwarded-For"))
    try:
        visitor_id_ensure(session=request.session, address=address)
    except NewVisitorRefused:
        return HttpResponse(NEW_VISITORS_REFUSED, status=429, content_type="text/plain; charset=utf-8")
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
