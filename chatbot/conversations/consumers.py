"""The customer chat socket (docs/protocol.md). Parses frames, calls one service, sends."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from chatbot.conversations import protocol, selectors
from chatbot.conversations.models import Conversation, new_public_id
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services.customer import UNAVAILABLE_DETAIL, customer_message_post
from chatbot.conversations.services.generations import conversation_cancel_answers

logger = logging.getLogger(__name__)

CLOSE_NO_SESSION = 4401
CLOSE_TOO_MANY_ERRORS = 4429
CLOSE_TOO_BIG = 1009
# A normal close by the page (closed, left, or the customer ended the chat) cancels the answer.
CLIENT_CLOSES_THAT_CANCEL = (1000, 1001)


class CustomerChatConsumer(AsyncJsonWebsocketConsumer):
    visitor_id: str | None = None
    conversation: Conversation | None = None

    async def connect(self) -> None:
        session = self.scope.get("session")
        self.visitor_id = session.get("visitor_id") if session is not None else None
        self.refused_frames = 0
        self.frame_times: list[float] = []
        # Accept first: a close before the handshake would reach the browser as a bare 1006.
        await self.accept()
        if not self.visitor_id:
            await self.close(code=CLOSE_NO_SESSION)

    async def disconnect(self, code: int) -> None:
        if self.conversation is not None:
            await self.channel_layer.group_discard(self.conversation.group_name, self.channel_name)
            if code in CLIENT_CLOSES_THAT_CANCEL:
                await database_sync_to_async(self._cancel_in_progress)(reason="the customer closed the chat")

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
        if raw is not None and len(raw) > settings.WS_MAX_FRAME_BYTES:
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
        await self.receive_json(await self.decode_json(text_data))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.refuse("malformed", "Each frame must be a JSON object with a string 'type'.")
            return
        if self._rate_limited():
            await self.refuse(
                "rate_limited", f"More than {settings.WS_MAX_MESSAGES_PER_MINUTE} frames a minute.", content
            )
            return
        handler = {
            "hello": self.on_hello,
            "message.send": self.on_message_send,
            "generation.cancel": self.on_generation_cancel,
            "conversation.new": self.on_conversation_new,
            "ping": self.on_ping,
        }.get(content["type"])
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

    # -- handlers -------------------------------------------------------------------------------
    async def on_hello(self, content: dict[str, Any]) -> None:
        public_id = content.get("conversation_id")
        if public_id is not None and not isinstance(public_id, str):
            raise InvalidInput("malformed", "conversation_id must be a string or null.")
        conversation = await database_sync_to_async(self._find_conversation)(public_id)
        if public_id and conversation is None:
            await self._attach(None)
            raise InvalidInput("conversation_not_found", "There is no such conversation.")
        await self._attach(conversation)
        await self.send_json(await database_sync_to_async(selectors.history_frame)(conversation=conversation))

    async def on_message_send(self, content: dict[str, Any]) -> None:
        # Not thread-sensitive: messages from many sockets are saved in parallel threads instead
        # of queueing behind one another in the single sync thread.
        # A first message starts a conversation, and the worker may publish its answer as soon
        # as the message commits: join the new conversation's group before that, not after.
        new_id = new_public_id() if self.conversation is None else None
        if new_id is not None:
            await self.channel_layer.group_add(protocol.conversation_group(new_id), self.channel_name)
        try:
            result = await database_sync_to_async(customer_message_post, thread_sensitive=False)(
                visitor_id=self.visitor_id,
                conversation=self.conversation,
                text=content.get("text"),
                client_id=content.get("client_id"),
                new_public_id=new_id,
            )
        except BaseException:
            if new_id is not None:
                await self.channel_layer.group_discard(protocol.conversation_group(new_id), self.channel_name)
            raise
        if new_id is not None:
            self.conversation = result.conversation  # its group was joined above
        elif self.conversation.pk != result.conversation.pk:
            await self._attach(result.conversation)
        await self.send_json(
            protocol.message_saved(
                client_id=result.message.client_id, message=result.message, conversation=result.conversation
            )
        )
        if result.unavailable:
            await self.send_json(protocol.error(code="assistant_unavailable", detail=UNAVAILABLE_DETAIL))

    async def on_generation_cancel(self, content: dict[str, Any]) -> None:
        if self.conversation is not None:
            await database_sync_to_async(self._cancel_in_progress)(reason="the customer stopped the answer")

    async def on_conversation_new(self, content: dict[str, Any]) -> None:
        await self._attach(None)
        await self.send_json(selectors.history_frame(conversation=None))

    async def on_ping(self, content: dict[str, Any]) -> None:
        await self.send_json(protocol.pong())

    # -- events from the group (type chatbot.events.CLIENT_EVENT) -------------------------------
    async def client_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

    # -- helpers --------------------------------------------------------------------------------
    def _find_conversation(self, public_id: str | None) -> Conversation | None:
        if public_id:
            return selectors.conversation_get_for_visitor(public_id=public_id, visitor_id=self.visitor_id)
        return selectors.conversation_latest_for_visitor(visitor_id=self.visitor_id)

    async def _attach(self, conversation: Conversation | None) -> None:
        if self.conversation is not None:
            await self.channel_layer.group_discard(self.conversation.group_name, self.channel_name)
        self.conversation = conversation
        if conversation is not None:
            await self.channel_layer.group_add(conversation.group_name, self.channel_name)

    def _cancel_in_progress(self, *, reason: str) -> None:
        conversation_cancel_answers(conversation=self.conversation, reason=reason)
