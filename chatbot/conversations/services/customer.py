"""What a customer's socket writes: their messages, and stopping the answer in progress."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from chatbot.conversations import limits, protocol
from chatbot.conversations.models import Conversation, Generation, Message
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services.desk import conversation_handoff
from chatbot.conversations.services.generations import conversation_cancel_answers, generation_enqueue
from chatbot.conversations.validation import client_id_validate, message_text_validate
from chatbot.serving.selectors import rollout_conversation_variant, serving_plan_get
from chatbot.serving.services import rollout_assign
from chatbot.sql import column, placeholders, table

UNAVAILABLE_DETAIL = "The assistant is unavailable right now. Your message is saved; please try again in a moment."


class NewVisitorRefused(Exception):
    """The address was given ADDRESS_MAX_NEW_VISITORS_PER_HOUR new chat sessions in the last hour."""


def visitor_id_ensure(*, session: Any, address: str | None = None) -> str:
    """The visitor id kept in the customer's session, created on first visit. A new one counts
    against its `address`'s limit (when given); past it, NewVisitorRefused and the session is
    left as it was."""
    visitor_id = session.get("visitor_id")
    if not visitor_id:
        visitor_id = secrets.token_urlsafe(24)
        if address is not None and not limits.address_new_visitor_admit(address=address, visitor_id=visitor_id):
            raise NewVisitorRefused(address)
        session["visitor_id"] = visitor_id
    return visitor_id


@dataclass
class PostResult:
    conversation: Conversation
    message: Message
    generation: Generation | None
    created: bool
    # For staff (`_staff_events`): the socket sends them once the customer has their reply, off
    # the way to the answer's first token (a send from here would hold the enqueue back).
    staff_events: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def unavailable(self) -> bool:
        return self.generation is not None and self.generation.status == Generation.Status.FAILED


def customer_message_post(
    *, visitor_id: str, conversation: Conversation | None, text: str, client_id: str, new_public_id: str | None = None
) -> PostResult:
    """Save a customer's message, then (after the commit) hand a generation to a worker.

    Refused (InvalidInput, nothing stored) past the visitor's limits (`limits.visitor_message_admit`:
    messages a minute, open answers), counted in one Redis round trip before the commit.

    The message is saved before anything else can fail. Takes a row lock on the conversation so
    that two sockets posting at once cancel and create generations one after the other. A resent
    `client_id` returns the stored message instead of a second copy. Any answer still in
    progress is cancelled: the customer has moved on. While an agent owns the conversation the
    bot does not answer. During a rollout a new conversation draws the variant it runs on for
    good (`serving.services.rollout_assign`). A new conversation takes `new_public_id` when given: the socket joins
    that conversation's group before posting, so the answer's first events cannot go out before
    anyone listens.
    """
    text = message_text_validate(text=text)
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
            if conversation.assigned_agent_id is not None:
                # Loaded now (after the lock, see `desk._locked`): the socket shows the agent's name.
                conversation.assigned_agent  # noqa: B018
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
        bot_answers = conversation.status == Conversation.Status.BOT
        if answering:
            # The new answer takes the cancelled one's place among the visitor's open answers.
            conversation_cancel_answers(
                conversation=conversation, reason="the customer sent a new message", replaced=bot_answers
            )

        generation = None
        if bot_answers:
            # During a rollout a new conversation draws its variant and keeps it (sticky).
            plan = serving_plan_get()
            if starts:
                variant = rollout_assign(conversation=conversation, plan=plan)
            else:
                variant = rollout_conversation_variant(plan=plan, conversation_id=conversation.pk)
            generation = Generation.objects.create(
                conversation=conversation, prompt_message=message, model_variant=variant
            )
        # The visitor's limits, counted last (the rows' ids are the counters' members): a refusal
        # rolls back everything above.
        listeners = limits.visitor_message_admit(
            visitor_id=visitor_id,
            message_id=message.pk,
            conversation_public_id=conversation.public_id,
            generation_id=None if generation is None else generation.pk,
        )
        if generation is not None:
            transaction.on_commit(lambda: generation_enqueue(generation=generation))
    return PostResult(
        conversation=conversation,
        message=message,
        generation=generation,
        created=True,
        staff_events=_staff_events(conversation, message, listeners=listeners),
    )


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


def _staff_events(
    conversation: Conversation, message: Message, *, listeners: limits.Listeners
) -> list[tuple[str, dict]]:
    """What staff hear of a customer's message: those watching the conversation see it, and the
    desk's lists its latest line; only where someone listens (nothing is published to a channel
    nobody reads: a desk opened later reads the lists and the transcript from the database)."""
    events = []
    if listeners.watching:
        events.append((conversation.staff_group_name, protocol.staff_message_new(message=message)))
    if listeners.desk_open:
        events.append(
            (
                protocol.DESK_GROUP,
                protocol.desk_conversation(
                    conversation=protocol.desk_conversation_payload(conversation, last_message=message.text)
                ),
            )
        )
    return events


def customer_handoff_request(
    *, visitor_id: str, conversation: Conversation | None, new_public_id: str | None = None
) -> Conversation:
    """The customer pressed "Talk to a person": the conversation (a new one if they have not
    written yet) waits for an agent. Asking again while waiting or with an agent changes nothing."""
    if conversation is None:
        conversation = Conversation.objects.create(
            visitor_id=visitor_id, **({"public_id": new_public_id} if new_public_id else {})
        )
    elif conversation.status == Conversation.Status.RESOLVED:
        raise InvalidInput("conversation_closed", "This conversation is resolved; start a new one.")
    conversation_handoff(conversation=conversation, reason=Conversation.HandoffReason.CUSTOMER_REQUEST)
    return Conversation.objects.select_related("assigned_agent").get(pk=conversation.pk)
