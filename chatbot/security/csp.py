"""A strict Content-Security-Policy on every response (Django 5.2 has none of its own): scripts,
styles, images and fonts only from this site's own files, no inline script or style, sockets
only back to this host, no framing, forms only to this site.

The pages keep to it: their code is ES modules under static/, their configuration travels in
data- attributes and `json_script` blocks (data, never run), and styles set from script go
through the CSSOM (`element.style.height = ...`), which a policy without 'unsafe-inline' allows.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin


def content_security_policy(*, request: HttpRequest) -> str:
    """The policy for a response to `request`: `connect-src` names this host's socket scheme
    (browsers that predate CSP 3 do not count ws: and wss: as 'self')."""
    socket_origin = f"{'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "font-src 'self'",
            f"connect-src 'self' {socket_origin}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Sets the policy on each response that has none (sync and async, like Django's own)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if settings.DEBUG and response.status_code >= 400:
            return response  # Django's debug pages style and script themselves inline
        if "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = content_security_policy(request=request)
        return response
