"""A staff test's own reasoning budget on one conversation."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from chatbot.conversations.models import Conversation
from chatbot.conversations.services.overrides import conversation_reasoning_budget_set

pytestmark = pytest.mark.django_db


def test_a_conversation_takes_a_budget_that_leaves_the_answer_its_room_and_gives_it_back(settings):
    settings.MAX_NEW_TOKENS = 256
    conversation = Conversation.objects.create(visitor_id="v1")
    conversation_reasoning_budget_set(conversation=conversation, tokens=224)
    conversation.refresh_from_db()
    assert conversation.reasoning_budget_tokens == 224
    with pytest.raises(ValueError, match="between 0 and 224"):
        conversation_reasoning_budget_set(conversation=conversation, tokens=225)
    conversation_reasoning_budget_set(conversation=conversation, tokens=None)
    conversation.refresh_from_db()
    assert conversation.reasoning_budget_tokens is None


def test_the_command_sets_a_conversations_budget_by_its_public_id(capsys):
    conversation = Conversation.objects.create(visitor_id="v1")
    call_command("reasoning_budget", conversation.public_id, "16")
    conversation.refresh_from_db()
    assert conversation.reasoning_budget_tokens == 16
    assert "reasoning budget 16 tokens" in capsys.readouterr().out
    call_command("reasoning_budget", conversation.public_id, "off")
    conversation.refresh_from_db()
    assert conversation.reasoning_budget_tokens is None
    with pytest.raises(CommandError, match="no conversation"):
        call_command("reasoning_budget", "nope", "16")
    with pytest.raises(CommandError, match="neither"):
        call_command("reasoning_budget", conversation.public_id, "lots")
