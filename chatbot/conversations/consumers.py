"""The customer chat socket (docs/protocol.md). Parses frames, calls one service, sends."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from chatbot.conversations import limits, protocol, selectors
from chatbot.conversations.models import Conversation, new_public_id
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services import desk, ratings
from chatbot.conversations.services.customer import (
    UNAVAILABLE_DETAIL,
    customer_handoff_request,
    customer_message_post,
)
from chatbot.conversations.services.generations import conversation_cancel_answers
from chatbot.events import CLIENT_EVENT, send_events
from chatbot.sockets import CLOSE_TOO_MANY_ERRORS, Handler, JsonSocketConsumer, TypingThrottle

logger = logging.getLogger(__name__)

CLOSE_NO_SESSION = 4401
# A normal close by the page (closed, left, or the customer ended the chat) cancels the answer.
CLIENT_CLOSES_THAT_CANCEL = (1000, 1001)


class CustomerChatConsumer(JsonSocketConsumer):
    visitor_id: str | None = None
    conversation: Conversation | None = None
    counted = False  # this socket counts against its visitor's VISITOR_MAX_SOCKETS
    unmetered = frozenset({"typing"})

    def handlers(self) -> dict[str, Handler]:
        return {
            "hello": self.on_hello,
            "message.send": self.on_message_send,
            "generation.cancel": self.on_generation_cancel,
            "conversation.new": self.on_conversation_new,
            "handoff.request": self.on_handoff_request,
            "conversation.resolve": self.on_resolve,
            "rating.submit": self.on_rating_submit,
            "typing": self.on_typing,
            "ping": self.on_ping,
        }

    async def connect(self) -> None:
        session = self.scope.get("session")
        self.visitor_id = session.get("visitor_id") if session is not None else None
        self.typing = TypingThrottle()
        self.counted = False
        # Accept first: a close before the handshake would reach the browser as a bare 1006.
        await self.accept()
        if not self.visitor_id:
            await self.close(code=CLOSE_NO_SESSION)
            return
        self.counted = await sync_to_async(limits.visitor_socket_open, thread_sensitive=False)(
            visitor_id=self.visitor_id, channel_name=self.channel_name
        )
        if not self.counted:
            await self.send_json(
                protocol.error(
                    code="too_many_sockets",
                    detail=f"This chat is open in {settings.VISITOR_MAX_SOCKETS} windows already; close one of them.",
                )
            )
            await self.close(code=CLOSE_TOO_MANY_ERRORS)

    async def disconnect(self, code: int) -> None:
        if self.counted:
            await sync_to_async(limits.visitor_socket_close, thread_sensitive=False)(
                visitor_id=self.visitor_id, channel_name=self.channel_name
            )
        if self.conversation is not None:
            await self.channel_layer.group_discard(self.conversation.group_name, self.channel_name)
            if code in CLIENT_CLOSES_THAT_CANCEL:
                await database_sync_to_async(self._cancel_in_progress)(reason="the customer closed the chat")

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
        await send_events(result.staff_events)

    async def on_generation_cancel(self, content: dict[str, Any]) -> None:
        if self.conversation is not None:
            await database_sync_to_async(self._cancel_in_progress)(reason="the customer stopped the answer")

    async def on_conversation_new(self, content: dict[str, Any]) -> None:
        await self._attach(None)
        await self.send_json(selectors.history_frame(conversation=None))

    async def on_handoff_request(self, content: dict[str, Any]) -> None:
        """ "Talk to a person": the conversation (a new one if there is none yet) waits for an
        agent; the page hears of it through the conversation's group."""
        new_id = new_public_id() if self.conversation is None else None
        if new_id is not None:
            await self.channel_layer.group_add(protocol.conversation_group(new_id), self.channel_name)
        try:
            conversation = await database_sync_to_async(customer_handoff_request)(
                visitor_id=self.visitor_id, conversation=self.conversation, new_public_id=new_id
            )
        except BaseException:
            if new_id is not None:
                await self.channel_layer.group_discard(protocol.conversation_group(new_id), self.channel_name)
            raise
        if new_id is not None:
            self.conversation = conversation
        # The page may have missed the group's events while it attached: the state, once more.
        await self.send_json(protocol.conversation_updated(conversation=conversation))

    async def on_resolve(self, content: dict[str, Any]) -> None:
        """ "This solved my problem" / "End chat": the conversation is resolved (the page then
        asks for a rating). The reply is `conversation.updated`."""
        if self.conversation is None:
            raise InvalidInput("conversation_not_found", "There is no conversation to end.")
        conversation = await database_sync_to_async(desk.conversation_resolve_by_customer)(
            conversation=self.conversation
        )
        await self.send_json(protocol.conversation_updated(conversation=conversation))

    async def on_rating_submit(self, content: dict[str, Any]) -> None:
        rating = await database_sync_to_async(ratings.rating_submit)(
            visitor_id=self.visitor_id,
            conversation_id=content.get("conversation_id"),
            score=content.get("score"),
            comment=content.get("comment", ""),
        )
        await self.send_json(protocol.rating_saved(conversation_id=content["conversation_id"], rating=rating))

    async def on_typing(self, content: dict[str, Any]) -> None:
        """The customer is typing (or stopped): staff watching the conversation see it. Nothing
        is stored."""
        active = content.get("active")
        if not isinstance(active, bool):
            raise InvalidInput("malformed", "active must be true or false.")
        if self.conversation is None or not self.typing.allows(active):
            return
        await self.channel_layer.group_send(
            self.conversation.staff_group_name,
            {
                "type": CLIENT_EVENT,
                "event": protocol.typing(conversation_id=self.conversation.public_id, author="customer", active=active),
            },
        )

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
