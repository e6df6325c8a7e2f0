"""The agents' desk page (`/desk/`) and its login. The page is a shell: the lists and the
conversations arrive over the desk socket."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chatbot.desk.selectors import PERMISSION

LOGIN_URL = "/desk/login/"


@require_GET
@login_required(login_url=LOGIN_URL)
def desk_page(request: HttpRequest) -> HttpResponse:
    if not (request.user.is_staff and request.user.has_perm(PERMISSION)):
        raise PermissionDenied("The desk is for staff who may handle conversations.")
    return render(
        request,
        "desk/index.html",
        {
            "ws_path": "/ws/desk/",
            "max_chars": settings.MESSAGE_MAX_CHARS,
            "store_name": settings.STORE_NAME,
            "agent_name": request.user.get_short_name() or request.user.get_username(),
        },
    )
