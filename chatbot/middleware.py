"""Django's stock HTTP middleware, declared sync-only so that under ASGI the chain runs in one
hand-over to the sync thread.

Each of these classes can run async (`MiddlewareMixin`), and in an async handler Django then
calls every `process_request`, `process_view` and `process_response` through a hand-over of its
own to the sync thread: about a dozen per page load, each waiting for the event loop and the
thread in turn. Declared sync-only, the seven run one after another in that thread, entered
once. The web's CPU for a chat page load (the session's INSERT included), measured through
uvicorn one at a time: see docs/benchmarks.md.
"""

from __future__ import annotations

from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Message
from django.contrib.sessions.middleware import SessionMiddleware as _Session
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptions
from django.middleware.common import CommonMiddleware as _Common
from django.middleware.csrf import CsrfViewMiddleware as _CsrfView
from django.middleware.security import SecurityMiddleware as _Security


class SecurityMiddleware(_Security):
    async_capable = False


class SessionMiddleware(_Session):
    async_capable = False


class CommonMiddleware(_Common):
    async_capable = False


class CsrfViewMiddleware(_CsrfView):
    async_capable = False


class AuthenticationMiddleware(_Authentication):
    async_capable = False


class MessageMiddleware(_Message):
    async_capable = False


class XFrameOptionsMiddleware(_XFrameOptions):
    async_capable = False
