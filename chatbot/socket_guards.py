"""What stands before every socket's consumer (chatbot/asgi.py): the same-origin check, and a
clean close for a socket opened on a path that has no consumer (docs/protocol.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

CLOSE_UNKNOWN_PATH = 4404
DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as `https://shop.example:8443`; None when it is not
    an http(s) origin with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6, written as ALLOWED_HOSTS and the Host header write it
        host = f"[{host}]"
    return scheme, host, port or DEFAULT_PORTS[scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def _page_scheme(scope: dict[str, Any]) -> str:
    """The scheme of the page that may open this socket: https for a wss socket, or where the
    proxy header Django trusts (`SECURE_PROXY_SSL_HEADER`) says so."""
    if scope.get("scheme") == "wss":
        return "https"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        # Django names it as a META key (HTTP_X_FORWARDED_PROTO); ASGI headers are lower case.
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        value = _header(scope, header)
        if value is not None and value.split(",", 1)[0].strip() == secure_value:
            return "https"
    return "http"


def origin_allowed(scope: dict[str, Any]) -> bool:
    """A browser's socket is taken only from a page of this site: its `Origin` must be in
    ALLOWED_HOSTS and either the very origin the socket was opened on (scheme, host and port,
    the host and port from its `Host` header) or one of CSRF_TRUSTED_ORIGINS, as Django's CSRF
    check has it for forms."""
    origin_header = _header(scope, b"origin")
    if not origin_header:
        return False
    origin = _origin_tuple(origin_header)
    if origin is None or not validate_host(origin[1], settings.ALLOWED_HOSTS):
        return False
    trusted = {_origin_tuple(url) for url in settings.CSRF_TRUSTED_ORIGINS}
    if origin in trusted:
        return True
    host = _header(scope, b"host")
    if not host:
        return False
    domain, port = split_domain_port(host.lower())
    if not domain:
        return False
    scheme = _page_scheme(scope)
    try:
        own_port = int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return False
    return origin == (scheme, domain, own_port)


class SameOriginValidator:
    """ASGI middleware: a socket whose origin `origin_allowed` refuses is denied at the handshake
    (HTTP 403), before any consumer runs. Replaces Channels' `AllowedHostsOriginValidator`,
    which compares only the host name (any scheme and port passed)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """A socket to a path with no consumer: accepted, then closed with 4404 (Channels' router
    raised "No route found", which the server answered with an HTTP 500)."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_UNKNOWN_PATH)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass  # frames racing the close are dropped
