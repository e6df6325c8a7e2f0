"""Staff tests' settings on one conversation, over the deployment's."""

from __future__ import annotations

from django.conf import settings

from chatbot.conversations.models import Conversation


def reasoning_budget_limit() -> int:
    """The longest budget that still leaves the answer its room in MAX_NEW_TOKENS."""
    return settings.MAX_NEW_TOKENS - settings.REASONING_ANSWER_RESERVE_TOKENS


def conversation_reasoning_budget_set(*, conversation: Conversation, tokens: int | None) -> Conversation:
    """Give one conversation its own reasoning budget (None: back to its variant's), for the
    answers that start after it. Raises ValueError for a budget that would leave the answer
    less than REASONING_ANSWER_RESERVE_TOKENS of MAX_NEW_TOKENS."""
    if tokens is not None and not 0 <= tokens <= reasoning_budget_limit():
        raise ValueError(
            f"a reasoning budget must be between 0 and {reasoning_budget_limit()} tokens "
            f"(MAX_NEW_TOKENS - {settings.REASONING_ANSWER_RESERVE_TOKENS}, the answer's least room)"
        )
    conversation.reasoning_budget_tokens = tokens
    conversation.save(update_fields=["reasoning_budget_tokens", "updated_at"])
    return conversation
