"""The customer's satisfaction rating of a resolved conversation: asked for once, 1-5 with an
optional comment, credited to whoever handled the conversation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from chatbot.conversations.models import Conversation, Rating
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.selectors import conversation_get_for_visitor


def rating_submit(*, visitor_id: str, conversation_id: Any, score: Any, comment: Any = "") -> Rating:
    """Store the customer's rating. Refused, with nothing stored: a conversation that is not
    theirs (the same words as one that does not exist), not resolved, or already rated; a score
    that is not a whole number from 1 to 5; a comment that is not text or over
    RATING_COMMENT_MAX_CHARS. Credited to the agent who resolved the conversation (or last owned
    it), else to the bot."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise InvalidInput("invalid_score", "The rating must be a whole number from 1 to 5.")
    comment = "" if comment is None else comment
    if not isinstance(comment, str):
        raise InvalidInput("malformed", "The comment must be text.")
    comment = comment.strip()
    if len(comment) > settings.RATING_COMMENT_MAX_CHARS:
        raise InvalidInput(
            "comment_too_long",
            f"The comment is {len(comment)} characters long; the limit is {settings.RATING_COMMENT_MAX_CHARS}.",
        )
    if "\x00" in comment:
        raise InvalidInput("malformed", "The comment contains a NUL character.")
    if not isinstance(conversation_id, str):
        raise InvalidInput("malformed", "conversation_id must be a string.")
    conversation = conversation_get_for_visitor(public_id=conversation_id, visitor_id=visitor_id)
    if conversation is None:
        raise InvalidInput("conversation_not_found", "There is no such conversation.")
    if conversation.status != Conversation.Status.RESOLVED:
        raise InvalidInput("conversation_not_resolved", "A conversation can be rated once it is resolved.")
    agent_id = conversation.resolved_by_agent_id or conversation.assigned_agent_id
    try:
        with transaction.atomic():
            rating = Rating.objects.create(
                conversation=conversation,
                score=score,
                comment=comment,
                credited_to=Rating.CreditedTo.AGENT if agent_id else Rating.CreditedTo.BOT,
                agent_id=agent_id,
            )
    except IntegrityError:
        raise InvalidInput("already_rated", "This conversation has been rated already; thank you.") from None
    return rating
