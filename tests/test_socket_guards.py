"""What stands before every socket: the same-origin check (scheme, host and port) and a clean
close for an unknown path, through the real ASGI application (docs/protocol.md)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from chatbot.asgi import application
from chatbot.conversations.models import Conversation
from chatbot.socket_guards import origin_allowed
from tests.conftest import make_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def scope(origin: str | None, host: str = "127.0.0.1:8000", **extra) -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "headers": headers, **extra}


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:9", "127.0.0.1:8000", False),  # another port of the same host
        ("https://127.0.0.1:8000", "127.0.0.1:8000", False),  # another scheme
        ("http://localhost:8000", "127.0.0.1:8000", False),  # another host the site also serves
        ("http://localhost", "localhost", True),  # default ports on both sides
        ("http://localhost:80", "localhost", True),
        ("http://evil.example", "evil.example", False),  # not in ALLOWED_HOSTS
        ("http://[::1]:8000", "[::1]:8000", True),
        ("null", "127.0.0.1:8000", False),
        ("http://127.0.0.1:notaport", "127.0.0.1:8000", False),
        (None, "127.0.0.1:8000", False),
    ],
)
async def test_the_origin_must_be_the_socket_s_own_scheme_host_and_port(origin, host, allowed):
    with override_settings(CSRF_TRUSTED_ORIGINS=[]):
        assert origin_allowed(scope(origin, host)) is allowed


async def test_a_wss_socket_takes_its_https_page_and_a_trusted_origin_is_taken_as_django_s_csrf_takes_it():
    with override_settings(CSRF_TRUSTED_ORIGINS=[], ALLOWED_HOSTS=["shop.example"]):
        assert origin_allowed(scope("https://shop.example", "shop.example", scheme="wss"))
        assert not origin_allowed(scope("http://shop.example", "shop.example", scheme="wss"))
        assert not origin_allowed(scope("https://shop.example", "shop.example"))
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://shop.example"], ALLOWED_HOSTS=["shop.example"]):
        # Behind a TLS proxy that speaks plain HTTP to the app.
        assert origin_allowed(scope("https://shop.example", "shop.example"))
    with override_settings(
        CSRF_TRUSTED_ORIGINS=[],
        ALLOWED_HOSTS=["shop.example"],
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    ):
        proxied = scope("https://shop.example", "shop.example")
        proxied["headers"].append((b"x-forwarded-proto", b"https"))
        assert origin_allowed(proxied)


async def test_a_socket_from_another_port_is_refused_at_the_handshake_and_stores_nothing():
    cookie, _ = await database_sync_to_async(make_session)()
    headers = [(b"origin", b"http://127.0.0.1:9"), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie.encode())]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected
    assert await database_sync_to_async(Conversation.objects.count)() == 0

    same = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie.encode())],
    )
    connected, _ = await same.connect()
    assert connected
    await same.send_json_to({"type": "ping"})
    assert await same.receive_json_from() == {"type": "pong"}
    await same.disconnect()


async def test_testserver_is_not_a_default_allowed_host():
    from chatbot import settings as product_settings

    assert "testserver" not in product_settings.ALLOWED_HOSTS
    assert "testserver" in settings.ALLOWED_HOSTS  # the test settings add it for Django's test client


@pytest.mark.parametrize("path", ["/ws/nothing-here/", "/", "/ws/chat/extra"])
async def test_a_socket_to_an_unknown_path_is_closed_cleanly_with_4404(path):
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    await communicator.wait()
