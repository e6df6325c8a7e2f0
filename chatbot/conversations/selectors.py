"""Reads about conversations. Nothing here writes."""

from __future__ import annotations

import functools

from django.conf import settings
from django.db import connection

from chatbot.conversations import protocol
from chatbot.conversations.models import Conversation, Generation, Message, Rating
from chatbot.desk.selectors import customer_queue_payload
from chatbot.sql import column, table


def conversation_get_for_visitor(*, public_id: str, visitor_id: str) -> Conversation | None:
    """The conversation if it is this visitor's; None both when it does not exist and when it is
    someone else's, so a caller cannot tell the two apart."""
    if not public_id or not visitor_id:
        return None
    return Conversation.objects.filter(public_id=public_id, visitor_id=visitor_id).first()


def conversation_latest_for_visitor(*, visitor_id: str) -> Conversation | None:
    return Conversation.objects.filter(visitor_id=visitor_id).order_by("-created_at").first()


def message_list(*, conversation: Conversation, limit: int | None = None) -> list[Message]:
    """The conversation's messages, oldest first (the last `limit` of them)."""
    limit = limit or settings.HISTORY_MAX_MESSAGES
    latest = list(conversation.messages.select_related("author_user").order_by("-created_at", "-id")[:limit])
    latest.reverse()
    return latest


def generation_in_progress(*, conversation: Conversation) -> Generation | None:
    """The bot's answer in progress, if any (an agent's suggestion is not the customer's)."""
    return (
        conversation.generations.filter(status__in=Generation.OPEN_STATUSES, kind=Generation.Kind.ANSWER)
        .order_by("-created_at")
        .first()
    )


def prompt_turns(*, generation: Generation) -> list[dict[str, str]]:
    """The conversation up to the generation's customer message, as chat turns for the model.

    Customer messages are user turns; bot and agent messages are assistant turns (their answer
    text only: the chat template drops reasoning from earlier turns anyway); system notices are
    not shown to the model. Oldest first; the caller trims to the context budget.
    """
    # On the way to every answer's first token: one plain statement with two columns, not the
    # ORM's compiled query and Message objects (compiling the query was most of its cost).
    with connection.cursor() as cursor:
        cursor.execute(
            _prompt_turns_sql(),
            [
                generation.conversation_id,
                generation.prompt_message_id,
                Message.Author.SYSTEM.value,
                settings.HISTORY_MAX_MESSAGES,
            ],
        )
        messages = cursor.fetchall()
    turns: list[dict[str, str]] = []
    for author, text in reversed(messages):
        role = "user" if author == Message.Author.CUSTOMER else "assistant"
        if turns and turns[-1]["role"] == role:
            # Two customer messages in a row (an earlier one went unanswered): one user turn.
            turns[-1]["content"] += "\n" + text
        else:
            turns.append({"role": role, "content": text})
    return turns


@functools.cache
def _prompt_turns_sql() -> str:
    """The latest messages of a conversation up to one message, but for one author, newest first."""
    author, message_id = column(Message, "author"), column(Message, "id")
    return (
        f"SELECT {author}, {column(Message, 'text')} FROM {table(Message)} "
        f"WHERE {column(Message, 'conversation')} = %s AND {message_id} <= %s AND {author} <> %s "
        f"ORDER BY {column(Message, 'created_at')} DESC, {message_id} DESC LIMIT %s"
    )


def history_frame(*, conversation: Conversation | None) -> dict:
    """The `history` frame: the conversation, its latest messages and its answer in progress."""
    if conversation is None:
        return protocol.history(conversation=None, messages=[], generation=None)
    return protocol.history(
        conversation=conversation,
        messages=message_list(conversation=conversation),
        generation=generation_in_progress(conversation=conversation),
        queue=customer_queue_payload(conversation=conversation),
        rating=(
            Rating.objects.filter(conversation=conversation).first()
            if conversation.status == Conversation.Status.RESOLVED
            else None
        ),
    )


def recent_customer_prompts(*, limit: int) -> list[list[dict[str, str]]]:
    """The prompts (conversation turns up to the customer's message, never the bot's answer to
    it) of the most recent generations, for comparing model variants on real questions."""
    generations = Generation.objects.order_by("-created_at")[:limit]
    return [prompt_turns(generation=generation) for generation in generations]
