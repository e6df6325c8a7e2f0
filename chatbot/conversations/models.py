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
    # Owner: the bot when null, else the staff user who claimed the conversation.
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    handoff_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["visitor_id", "-created_at"])]

    def __str__(self) -> str:
        return f"Conversation {self.public_id} ({self.status})"

    @property
    def owner_is_bot(self) -> bool:
        return self.assigned_agent_id is None

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

    OPEN_STATUSES = (Status.PENDING, Status.RUNNING)
    FINAL_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="generations")
    # The customer message this generation answers.
    prompt_message = models.ForeignKey("Message", on_delete=models.CASCADE, related_name="+")
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
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    queue_wait_ms = models.FloatField(null=True, blank=True)
    # From the customer's message being saved to the first generated token (what they wait)...
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    # ...and the engine's own part of it: from submission to the batch to the first token.
    engine_time_to_first_token_ms = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=~models.Q(client_id=""),
                name="message_unique_client_id_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.author} message {self.pk}"


class Rating(models.Model):
    """The customer's 1-5 satisfaction rating of a resolved conversation, asked for once."""

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="rating")
    score = models.PositiveSmallIntegerField()
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(score__gte=1) & models.Q(score__lte=5), name="rating_score_1_to_5"
            )
        ]
