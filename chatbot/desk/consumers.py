"""The agents' desk socket, `/ws/desk/` (docs/protocol.md, "Desk socket"): staff with the
permission to handle conversations, authenticated by their Django session. Parses frames, calls
one service, sends; the lists, the open conversation and the presence of the team stay live
through Channels groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from chatbot.conversations import protocol
from chatbot.conversations.models import Conversation
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services import desk as desk_services
from chatbot.desk import selectors
from chatbot.desk.presence import conversation_watch, presence_drop, presence_touch
from chatbot.events import CLIENT_EVENT, send_events
from chatbot.sockets import Handler, JsonSocketConsumer, TypingThrottle

T = TypeVar("T")

CLOSE_LOGIN_REQUIRED = 4401
CLOSE_FORBIDDEN = 4403


class DeskConsumer(JsonSocketConsumer):
    # Typing indicators and opening conversations to read them store nothing.
    unmetered = frozenset({"typing", "conversation.open"})
    user: Any = None
    watching: Conversation | None = None

    def handlers(self) -> dict[str, Handler]:
        return {
            "hello": self.on_hello,
            "conversation.open": self.on_open,
            "conversation.claim": self.on_claim,
            "message.send": self.on_message_send,
            "note.add": self.on_note_add,
            "typing": self.on_typing,
            "suggestion.request": self.on_suggestion_request,
            "suggestion.cancel": self.on_suggestion_cancel,
            "conversation.handback": self.on_hand_back,
            "conversation.resolve": self.on_resolve,
            "presence.set": self.on_presence_set,
            "ping": self.on_ping,
        }

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.typing = TypingThrottle()
        # Accept first: a close before the handshake would reach the browser as a bare 1006.
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_LOGIN_REQUIRED)
            return
        if not await database_sync_to_async(self._may_use_the_desk)(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user = user
        await self.channel_layer.group_add(protocol.DESK_GROUP, self.channel_name)
        await database_sync_to_async(self._present)(True)

    async def disconnect(self, code: int) -> None:
        if self.user is None:
            return
        await self._watch(None)
        await self.channel_layer.group_discard(protocol.DESK_GROUP, self.channel_name)
        await database_sync_to_async(self._present)(False)

    @staticmethod
    def _may_use_the_desk(user: Any) -> bool:
        return user.is_active and user.is_staff and user.has_perm(selectors.PERMISSION)

    def _present(self, here: bool) -> None:
        """This socket comes or goes: the team's presence and the waiting customers' "is anyone
        online" follow."""
        if here:
            presence_touch(user_id=self.user.pk, channel_name=self.channel_name)
        else:
            presence_drop(user_id=self.user.pk, channel_name=self.channel_name)
        desk_services.presence_broadcast()

    # -- handlers -------------------------------------------------------------------------------
    async def on_hello(self, content: dict[str, Any]) -> None:
        await self.send_json(await database_sync_to_async(self._snapshot)())

    def _snapshot(self) -> dict[str, Any]:
        frames = selectors.agent_frames()
        me = next((frame for frame in frames if frame["id"] == self.user.pk), None)
        return protocol.desk_snapshot(
            me=me, agents=frames, lists=selectors.desk_lists(agent=self.user), support_hours=settings.SUPPORT_HOURS
        )

    async def on_open(self, content: dict[str, Any]) -> None:
        """Read one conversation and follow it live (one at a time per socket)."""

        def read(conversation: Conversation) -> tuple[Conversation, dict[str, Any]]:
            return conversation, selectors.conversation_detail_frame(conversation=conversation)

        conversation, detail = await self._act(content, read)
        await self._watch(conversation)
        await self.send_json(detail)

    async def _watch(self, conversation: Conversation | None) -> None:
        if self.watching is not None:
            await self.channel_layer.group_discard(self.watching.group_name, self.channel_name)
            await self.channel_layer.group_discard(self.watching.staff_group_name, self.channel_name)
        self.watching = conversation
        if conversation is not None:
            await self.channel_layer.group_add(conversation.group_name, self.channel_name)
            await self.channel_layer.group_add(conversation.staff_group_name, self.channel_name)
            # The worker streams the reasoning to the staff group only while someone follows it.
            await sync_to_async(conversation_watch, thread_sensitive=False)(public_id=conversation.public_id)

    async def on_claim(self, content: dict[str, Any]) -> None:
        await self._act(
            content, lambda conversation: desk_services.conversation_claim(conversation=conversation, agent=self.user)
        )

    async def on_message_send(self, content: dict[str, Any]) -> None:
        post = await self._act(
            content,
            lambda conversation: desk_services.agent_message_post(
                conversation=conversation, agent=self.user, text=content.get("text"), client_id=content.get("client_id")
            ),
        )
        await send_events(post.events)  # the customer first
        await self.send_json(
            protocol.message_saved(
                client_id=post.message.client_id, message=post.message, conversation=post.conversation
            )
        )

    async def on_note_add(self, content: dict[str, Any]) -> None:
        await self._act(
            content,
            lambda conversation: desk_services.note_add(
                conversation=conversation, agent=self.user, text=content.get("text")
            ),
        )

    async def on_typing(self, content: dict[str, Any]) -> None:
        """The agent is typing a reply (or stopped): the customer sees it. Nothing is stored;
        only the owner's indicator reaches the customer."""
        active = content.get("active")
        if not isinstance(active, bool):
            raise InvalidInput("malformed", "active must be true or false.")
        conversation = self.watching
        if (
            conversation is None
            or conversation.public_id != content.get("conversation_id")
            or not self.typing.allows(active)
        ):
            return
        owner = await database_sync_to_async(
            lambda: Conversation.objects.filter(pk=conversation.pk).values_list("assigned_agent", flat=True).first()
        )()
        if owner != self.user.pk:
            return
        frame = protocol.typing(
            conversation_id=conversation.public_id,
            author="agent",
            name=protocol.person_name(self.user),
            active=active,
        )
        await self.channel_layer.group_send(conversation.group_name, {"type": CLIENT_EVENT, "event": frame})

    async def on_suggestion_request(self, content: dict[str, Any]) -> None:
        generation = await self._act(
            content, lambda conversation: desk_services.suggestion_request(conversation=conversation, agent=self.user)
        )
        await self.send_json(
            protocol.suggestion_queued(conversation_id=content["conversation_id"], generation_id=generation.pk)
        )

    async def on_suggestion_cancel(self, content: dict[str, Any]) -> None:
        await self._act(
            content,
            lambda conversation: desk_services.suggestion_cancel(
                conversation=conversation, agent=self.user, generation_id=content.get("generation_id")
            ),
        )

    async def on_hand_back(self, content: dict[str, Any]) -> None:
        await self._act(
            content,
            lambda conversation: desk_services.conversation_hand_back(conversation=conversation, agent=self.user),
        )

    async def on_resolve(self, content: dict[str, Any]) -> None:
        await self._act(
            content, lambda conversation: desk_services.conversation_resolve(conversation=conversation, agent=self.user)
        )

    async def on_presence_set(self, content: dict[str, Any]) -> None:
        await database_sync_to_async(desk_services.agent_presence_set)(
            agent=self.user, presence=content.get("presence")
        )

    async def on_ping(self, content: dict[str, Any]) -> None:
        await database_sync_to_async(presence_touch)(
            user_id=self.user.pk,
            channel_name=self.channel_name,
            watching=self.watching.public_id if self.watching is not None else None,
        )
        await super().on_ping(content)

    async def _act(self, content: dict[str, Any], action: Callable[[Conversation], T]) -> T:
        """Find the frame's conversation and act on it, in one trip to a database thread (not
        the thread-sensitive one: a reply does not queue behind other sockets' reads)."""

        def act() -> T:
            conversation = selectors.conversation_for_staff(public_id=content.get("conversation_id"))
            if conversation is None:
                raise InvalidInput("conversation_not_found", "There is no such conversation.")
            return action(conversation)

        return await database_sync_to_async(act, thread_sensitive=False)()
