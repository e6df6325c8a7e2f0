"""`python manage.py reasoning_budget CONVERSATION TOKENS|off`: a staff test's own reasoning budget
on one conversation (its public id, as the desk shows it), over its variant's and
REASONING_BUDGET_TOKENS, for the answers that start after it; `off` gives it theirs back."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from chatbot.conversations.models import Conversation
from chatbot.conversations.services.overrides import conversation_reasoning_budget_set


class Command(BaseCommand):
    help = "Set one conversation's reasoning budget (tokens, or 'off'), for staff tests."

    def add_arguments(self, parser) -> None:
        parser.add_argument("conversation", help="the conversation's public id")
        parser.add_argument("tokens", help="tokens inside <think> before the engine closes it, or 'off'")

    def handle(self, *args, conversation: str, tokens: str, **options) -> None:
        try:
            found = Conversation.objects.get(public_id=conversation)
        except Conversation.DoesNotExist:
            raise CommandError(f"no conversation {conversation}") from None
        if tokens == "off":
            budget = None
        elif tokens.isdigit():
            budget = int(tokens)
        else:
            raise CommandError(f"{tokens!r} is neither a number of tokens nor 'off'")
        try:
            conversation_reasoning_budget_set(conversation=found, tokens=budget)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        where = "its variant's" if budget is None else f"{budget} tokens"
        self.stdout.write(f"conversation {found.public_id}: reasoning budget {where}")
