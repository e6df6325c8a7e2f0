"""Conversations, their messages, and the generations that produce the bot's messages.

The Generation row is the durable record of one request to the model (the Saleor webhook-delivery
pattern): written PENDING with the customer's message, its id is all the Celery task receives,
and the task records the outcome on it.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from chatbot.conversations.protocol import conversation_group, conversation_staff_group


def new_public_id() -> str:
    # 128 bits from the OS's CSPRNG: conversation ids cannot be guessed or enumerated.
    return secrets.token_urlsafe(16)


class Conversation(models.Model):
    class Status(models.TextChoices):
        BOT = "bot", "Bot is answering"
        WAITING_FOR_AGENT = "waiting_for_agent", "Waiting for an agent"
        WITH_AGENT = "with_agent", "With an agent"
        RESOLVED = "resolved", "Resolved"

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    # The random id kept in the customer's session cookie; the conversation belongs to it.
    visitor_id = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.BOT, db_index=True)

    class HandoffReason(models.TextChoices):
        CUSTOMER_REQUEST = "customer_request", "The customer asked for a person"
        BOT_FAILED = "bot_failed", "The bot could not answer (out of attempts or no worker)"
        NO_ANSWER_TWICE = "no_answer_twice", "The bot had no answer twice in a row"
        AGENT_TAKEOVER = "agent_takeover", "An agent took it over from the bot"
        BOT_HANDOFF = "bot_handoff", "The bot handed it over"
        NO_ANSWER_IN_TIME = "no_answer_in_time", "The bot's allowance ran out before it answered"

    class ResolvedBy(models.TextChoices):
        BOT = "bot", "The bot"
        AGENT = "agent", "An agent"
        CUSTOMER = "customer", "The customer"

    # Owner: the bot when null, else the staff user who claimed the conversation. Both change
    # only through the services (`services/desk.py`), never by hand in the admin.
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    handoff_reason = models.CharField(max_length=32, choices=HandoffReason.choices, blank=True)
    # The words behind the reason, where there are some (the model's own, say).
    handoff_detail = models.CharField(max_length=500, blank=True)
    # Staff tests: this conversation's reasoning budget, over its variant's and
    # REASONING_BUDGET_TOKENS (`manage.py reasoning_budget`); null: theirs.
    reasoning_budget_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # The times analytics read: handed to people, an agent's first reply after it, resolved.
    escalated_at = models.DateTimeField(null=True, blank=True)
    # The first reply to the customer, the bot's or an agent's (its first response time).
    first_response_at = models.DateTimeField(null=True, blank=True)
    first_agent_reply_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=16, choices=ResolvedBy.choices, blank=True)
    resolved_by_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["visitor_id", "-created_at"]),
            # The desk's lists: the queue by wait, each agent's own, the bot's live ones, the resolved.
            models.Index(fields=["status", "escalated_at"]),
            models.Index(fields=["assigned_agent", "status"]),
            models.Index(fields=["status", "-last_message_at"]),
            models.Index(fields=["status", "-resolved_at"]),
        ]
        permissions = [("handle_conversations", "Can handle conversations at the agents' desk")]

    def __str__(self) -> str:
        return f"Conversation {self.public_id} ({self.status})"

    @property
    def bot_answers(self) -> bool:
        """The bot answers the customer's messages: nobody handed the conversation to people."""
        return self.status == self.Status.BOT and self.assigned_agent_id is None

    @property
    def group_name(self) -> str:
        """Channels group of every socket showing this conversation to its customer."""
        return conversation_group(self.public_id)

    @property
    def staff_group_name(self) -> str:
        """Channels group for staff views of this conversation (they may read the reasoning)."""
        return conversation_staff_group(self.public_id)


class Generation(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Kind(models.TextChoices):
        ANSWER = "answer", "The bot's answer to the customer"
        SUGGESTION = "suggestion", "A reply drafted for an agent"

    OPEN_STATUSES = (Status.PENDING, Status.RUNNING)
    FINAL_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="generations")
    # The customer message this generation answers.
    prompt_message = models.ForeignKey("Message", on_delete=models.CASCADE, related_name="+")
    # An answer streams to the customer and is stored as a bot message; a suggestion streams to
    # the agent who asked for it only, and its text is kept here (never sent by itself).
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ANSWER)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    model_variant = models.CharField(max_length=32)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Generation {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class Message(models.Model):
    class Author(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=16, choices=Author.choices)
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    # The bot's `<think>` reasoning, kept apart from the answer; shown to staff, never to customers.
    reasoning = models.TextField(blank=True)
    # Idempotency key from the customer's client: a resent frame does not store the message twice.
    client_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    # Measures of a bot message (null for the others).
    generation = models.OneToOneField(
        Generation, null=True, blank=True, on_delete=models.SET_NULL, related_name="result_message"
    )
    model_variant = models.CharField(max_length=32, blank=True)
    # The bot produced no answer text (the customer read a stock "no answer" line instead); two
    # in a row hand the conversation to a person.
    no_answer = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    queue_wait_ms = models.FloatField(null=True, blank=True)
    # From the customer's message being saved to the first generated token (what they wait)...
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    # ...and the engine's own part of it: from submission to the batch to the first token.
    engine_time_to_first_token_ms = models.FloatField(null=True, blank=True)
    # From the customer's message being saved to the first token of the answer, after the
    # reasoning (null when there was no answer text): what the customer waits to read a word.
    time_to_first_answer_token_ms = models.FloatField(null=True, blank=True)
    # The engine closed the reasoning at its budget (REASONING_BUDGET_TOKENS).
    reasoning_cut = models.BooleanField(default=False)
    latency_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    # The knowledge base's passages the answer was given, as they were then
    # (chatbot.knowledge.text.Passage.snapshot, plus "cited": whether the answer names it). The
    # cited ones are the answer's sources, shown to the customer as links to the help page.
    passages = models.JSONField(default=list, blank=True)
    # What the answer check did (inference_worker.grounding.check_support): "" (not a statement
    # about the store, or no check), "supported", "quoted" (the passage's own text replaced an
    # answer whose figures were not the passage's), "unsupported" (no passage said it).
    answer_check = models.CharField(max_length=16, blank=True)

    @property
    def sources(self) -> list[dict]:
        return [p for p in self.passages or () if p.get("cited")]

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # The analytics' reads: messages by author or by variant over a period.
            models.Index(fields=["author", "created_at"]),
            models.Index(fields=["model_variant", "created_at"]),
            models.Index(fields=["conversation", "author"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=~models.Q(client_id=""),
                name="message_unique_client_id_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.author} message {self.pk}"


class Note(models.Model):
    """A private note of staff on a conversation: the customer never receives it, and the model
    never reads it."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]


class AgentProfile(models.Model):
    """An agent's presence as they set it at the desk, and how many conversations they take at
    once (auto-assignment fills up to it)."""

    class Presence(models.TextChoices):
        ONLINE = "online", "Online"
        AWAY = "away", "Away"
        OFFLINE = "offline", "Offline"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_profile")
    presence = models.CharField(max_length=16, choices=Presence.choices, default=Presence.ONLINE)
    # Null: DESK_AGENT_CAPACITY.
    capacity = models.PositiveSmallIntegerField(null=True, blank=True)
    # Round robin: the online agent assigned longest ago goes first.
    last_assigned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.presence})"


class Rating(models.Model):
    """The customer's 1-5 satisfaction rating of a resolved conversation, asked for once. It is
    credited to whoever handled the conversation (the bot, or the agent who resolved it or last
    owned it) and, through the conversation's bot messages, to the model variants that answered."""

    class CreditedTo(models.TextChoices):
        BOT = "bot", "The bot"
        AGENT = "agent", "An agent"

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="rating")
    score = models.PositiveSmallIntegerField()
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    credited_to = models.CharField(max_length=16, choices=CreditedTo.choices, default=CreditedTo.BOT)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(score__gte=1) & models.Q(score__lte=5), name="rating_score_1_to_5"
            )
        ]
        permissions = [("view_analytics", "Can view the support analytics")]
