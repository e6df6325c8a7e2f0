"""What every socket of the product shares (the customer's chat, the agents' desk): JSON frames
with a `type`, one handler per type, the frame-size and rate limits, refusals as `error` frames,
and events from the Channels groups passed on to the socket (docs/protocol.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from chatbot.conversations import protocol
from chatbot.conversations.protocol import InvalidInput

CLOSE_TOO_BIG = 1009
CLOSE_TOO_MANY_ERRORS = 4429

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class JsonSocketConsumer(AsyncJsonWebsocketConsumer):
    # Frame types that do not count against WS_MAX_MESSAGES_PER_MINUTE (they store nothing and
    # come often by design, e.g. typing indicators; each handler bounds its own).
    unmetered: frozenset[str] = frozenset()

    def handlers(self) -> dict[str, Handler]:
        """Frame type -> handler."""
        raise NotImplementedError

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.refused_frames = 0
        self.frame_times: list[float] = []
        await super().websocket_connect(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels (4.2+) runs close_old_connections() before every handler, through a hop to
        # its one sync thread: for every streamed answer event too, about twenty a second per
        # answer, which never touch the database. Every database use here goes through
        # database_sync_to_async, which closes old connections itself in its own thread, so
        # the hop is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # -- frames in ------------------------------------------------------------------------------
    async def websocket_receive(self, message: dict[str, Any]) -> None:
        raw = message.get("text")
        if raw is None and message.get("bytes") is not None:
            raw = message["bytes"]
        if raw is not None and frame_too_big(raw, settings.WS_MAX_FRAME_BYTES):
            await self.close(code=CLOSE_TOO_BIG)
            return
        await super().websocket_receive(message)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return json.loads(text_data)
        except ValueError:
            return None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.refuse("malformed", "Frames must be JSON text.")
            return
        content = await self.decode_json(text_data)
        if content is not None and not is_text(content):
            await self.refuse(
                "malformed", "The frame contains an unpaired surrogate escape (such as \\ud800), which is not text."
            )
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.refuse("malformed", "Each frame must be a JSON object with a string 'type'.")
            return
        if content["type"] not in self.unmetered and self._rate_limited():
            await self.refuse(
                "rate_limited", f"More than {settings.WS_MAX_MESSAGES_PER_MINUTE} frames a minute.", content
            )
            return
        handler = self.handlers().get(content["type"])
        if handler is None:
            await self.refuse("unknown_type", f"Unknown frame type {content['type'][:40]!r}.", content)
            return
        try:
            await handler(content)
        except InvalidInput as exc:
            await self.refuse(exc.code, exc.detail, content)

    def _rate_limited(self) -> bool:
        now = time.monotonic()
        self.frame_times = [t for t in self.frame_times if now - t < 60] + [now]
        return len(self.frame_times) > settings.WS_MAX_MESSAGES_PER_MINUTE

    async def refuse(self, code: str, detail: str, frame: Any = None) -> None:
        self.refused_frames += 1
        await self.send_json(protocol.error(code=code, detail=detail, frame=frame))
        if self.refused_frames > settings.WS_MAX_REFUSED_FRAMES:
            await self.close(code=CLOSE_TOO_MANY_ERRORS)

    async def on_ping(self, content: dict[str, Any]) -> None:
        await self.send_json(protocol.pong())

    # -- events from the groups (type chatbot.events.CLIENT_EVENT) ------------------------------
    async def client_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])


def is_text(content: Any) -> bool:
    """Whether a decoded frame is all text: JSON's "\\ud800" escapes decode to lone surrogates,
    which no UTF-8 text (PostgreSQL's, the socket's own) can hold, so a message carrying one would
    fail where it is stored or sent back."""
    try:
        json.dumps(content, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def frame_too_big(raw: str | bytes, limit: int) -> bool:
    """Whether a frame is over `limit` bytes, a text frame counted in UTF-8 as it travelled (an
    emoji is four bytes). Text frames are encoded only when their length leaves it in doubt."""
    if isinstance(raw, bytes):
        return len(raw) > limit
    if len(raw) > limit:
        return True
    if len(raw) * 4 <= limit:
        return False
    return len(raw.encode("utf-8", "surrogatepass")) > limit


class TypingThrottle:
    """Typing indicators pass at most one per `interval_s` per socket (a change of state always
    passes): a page that sends one per keystroke costs the others nothing."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last = (0.0, None)

    def allows(self, active: bool) -> bool:
        now = time.monotonic()
        last_at, last_state = self._last
        if active == last_state and now - last_at < self.interval_s:
            return False
        self._last = (now, active)
        return True
