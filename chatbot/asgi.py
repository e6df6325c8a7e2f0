"""ASGI entry point: HTTP through Django, WebSockets through Channels (same origin only: scheme,
host and port, `chatbot.socket_guards`)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.SERVE_STATIC:
    # The embedded demo serves /static/ itself; behind a real proxy, collectstatic and let it serve.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from chatbot.conversations.routing import websocket_urlpatterns as chat_sockets  # noqa: E402
from chatbot.desk.routing import websocket_urlpatterns as desk_sockets  # noqa: E402
from chatbot.socket_guards import SameOriginValidator, UnknownPathConsumer  # noqa: E402

# Any other path gets a socket closed with 4404 (Channels' router alone raised, an HTTP 500).
unknown_path = [re_path(r"", UnknownPathConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(chat_sockets + desk_sockets + unknown_path))),
    }
)
