"""Requests whose address holds a NUL character are refused with a 400 that says so.

PostgreSQL text cannot hold NUL, so a ``%00`` in a path or a query parameter that reaches a
query (``/help/%00``, an admin list filter) would end as a server error. No page or filter here
takes one: the customer's and agents' messages are checked where they arrive
(``chatbot.conversations.validation``), and Django's form fields refuse NUL in what is posted.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.deprecation import MiddlewareMixin

NUL_IN_ADDRESS = "Bad request: the address contains a NUL character (%00), which no page here accepts."


def has_nul(request: HttpRequest) -> bool:
    return "\x00" in request.path or any(
        "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
    )


class RefuseNulMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if has_nul(request):
            return HttpResponseBadRequest(NUL_IN_ADDRESS, content_type="text/plain; charset=utf-8")
        return None
