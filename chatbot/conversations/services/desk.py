"""What staff write from the agents' desk: taking a conversation over from the bot (and, with
the desk, replying, handing back and resolving)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from chatbot.conversations import protocol
from chatbot.conversations.models import Conversation, Message
from chatbot.conversations.services.generations import conversation_cancel_answers
from chatbot.events import send_event_on_commit


def conversation_assign_agent(*, conversation: Conversation, agent: Any) -> Conversation:
    """A staff member takes the conversation over: the bot goes silent, any answer in progress is
    cancelled (its request leaves the worker's batch), and the customer is told who joined.
    Locks the conversation row."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        conversation_cancel_answers(conversation=conversation, reason="an agent took the conversation over")
        conversation.assigned_agent = agent
        conversation.status = Conversation.Status.WITH_AGENT
        conversation.save(update_fields=["assigned_agent", "status", "updated_at"])
        name = agent.get_short_name() or agent.get_username()
        notice = Message.objects.create(
            conversation=conversation,
            author=Message.Author.SYSTEM,
            text=f"{name} from our support team joined the conversation.",
        )
        send_event_on_commit(conversation.group_name, protocol.message_new(message=notice))
    return conversation
