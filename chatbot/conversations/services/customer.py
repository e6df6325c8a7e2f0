"""What a customer's socket writes: their messages, and stopping the answer in progress."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from chatbot.conversations.models import Conversation, Generation, Message
from chatbot.conversations.protocol import CLIENT_ID_RE, InvalidInput
from chatbot.conversations.services.generations import conversation_cancel_answers, generation_enqueue
from chatbot.serving.selectors import active_variant_get
from chatbot.sql import column, placeholders, table

UNAVAILABLE_DETAIL = "The assistant is unavailable right now. Your message is saved; please try again in a moment."


def visitor_id_ensure(*, session: Any) -> str:
    """The visitor id kept in the customer's session, created on first visit."""
    visitor_id = session.get("visitor_id")
    if not visitor_id:
        visitor_id = secrets.token_urlsafe(24)
        session["visitor_id"] = visitor_id
    return visitor_id


def customer_text_validate(*, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("empty_message", "The message is empty.")
    if len(text) > settings.MESSAGE_MAX_CHARS:
        raise InvalidInput(
            "message_too_long",
            f"The message is {len(text)} characters long; the limit is {settings.MESSAGE_MAX_CHARS}.",
        )
    if "\x00" in text:
        raise InvalidInput("malformed", "The message contains a NUL character.")
    return text.strip()


def client_id_validate(*, client_id: Any) -> str:
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise InvalidInput("invalid_client_id", "client_id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'.")
    return client_id


@dataclass
class PostResult:
    conversation: Conversation
    message: Message
    generation: Generation | None
    created: bool

    @property
    def unavailable(self) -> bool:
        return self.generation is not None and self.generation.status == Generation.Status.FAILED


def customer_message_post(
    *, visitor_id: str, conversation: Conversation | None, text: str, client_id: str, new_public_id: str | None = None
) -> PostResult:
    """Save a customer's message, then (after the commit) hand a generation to a worker.

    The message is saved before anything else can fail. Takes a row lock on the conversation so
    that two sockets posting at once cancel and create generations one after the other. A resent
    `client_id` returns the stored message instead of a second copy. Any answer still in
    progress is cancelled: the customer has moved on. While an agent owns the conversation the
    bot does not answer. A new conversation takes `new_public_id` when given: the socket joins
    that conversation's group before posting, so the answer's first events cannot go out before
    anyone listens.
    """
    text = customer_text_validate(text=text)
    client_id = client_id_validate(client_id=client_id)
    with transaction.atomic():
        starts = conversation is None
        if starts:
            # A new conversation has no messages and no answers yet: nothing to look up (a
            # query less on the way to the first answer).
            answering = False
            conversation = Conversation.objects.create(
                visitor_id=visitor_id, **({"public_id": new_public_id} if new_public_id else {})
            )
        else:
            conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
            if conversation.status == Conversation.Status.RESOLVED:
                raise InvalidInput("conversation_closed", "This conversation is resolved; start a new one.")
            existing_id, answering = _post_lookups(conversation_id=conversation.pk, client_id=client_id)
            if existing_id is not None:
                existing = Message.objects.get(pk=existing_id)
                generation = Generation.objects.filter(prompt_message=existing).order_by("-id").first()
                return PostResult(conversation=conversation, message=existing, generation=generation, created=False)

        message = Message.objects.create(
            conversation=conversation, author=Message.Author.CUSTOMER, text=text, client_id=client_id
        )
        conversation.last_message_at = message.created_at
        conversation.save(update_fields=["last_message_at", "updated_at"])
        if answering:
            conversation_cancel_answers(conversation=conversation, reason="the customer sent a new message")

        generation = None
        if conversation.status == Conversation.Status.BOT:
            generation = Generation.objects.create(
                conversation=conversation, prompt_message=message, model_variant=active_variant_get()
            )
            transaction.on_commit(lambda: generation_enqueue(generation=generation))
    return PostResult(conversation=conversation, message=message, generation=generation, created=True)


def _post_lookups(*, conversation_id: int, client_id: str) -> tuple[int | None, bool]:
    """What a message to a locked conversation must know first, in one plain statement (on the
    way to every first token, where the ORM's compiling of two queries cost more than the
    queries): the id of a message already stored with this `client_id` (a resend), and whether
    an answer is still pending or running. No answer can start meanwhile: only a post creates
    one, and posts hold the conversation's lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            _post_lookups_sql(),
            [conversation_id, client_id, conversation_id, *(status.value for status in Generation.OPEN_STATUSES)],
        )
        existing_id, answering = cursor.fetchone()
    return existing_id, bool(answering)


@functools.cache
def _post_lookups_sql() -> str:
    return (
        f"SELECT (SELECT {column(Message, 'id')} FROM {table(Message)} "
        f"WHERE {column(Message, 'conversation')} = %s AND {column(Message, 'client_id')} = %s LIMIT 1), "
        f"EXISTS (SELECT 1 FROM {table(Generation)} WHERE {column(Generation, 'conversation')} = %s "
        f"AND {column(Generation, 'status')} IN ({placeholders(Generation.OPEN_STATUSES)}))"
    )
