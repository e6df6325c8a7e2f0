"""What happens when people take over from the bot: the handoff (the customer asks, the bot
fails, the bot has no answer twice, the model hands over), the desk's claim, replies, private
notes, suggested replies, handing back to the bot, resolving (by the agent, the customer, or the
bot after the customer's silence), and the agents' presence.

Every change of a conversation's status or owner goes through here, under the conversation's
row lock: two agents claiming at once are served one after the other, and the second is told who
took it. The customer, the desk and the queue hear of each change after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatbot.conversations import protocol
from chatbot.conversations.models import AgentProfile, Conversation, Generation, Message, Note
from chatbot.conversations.protocol import InvalidInput
from chatbot.conversations.services.generations import (
    conversation_cancel_answers,
    generation_cancel,
    generation_enqueue,
)
from chatbot.conversations.validation import client_id_validate, message_text_validate
from chatbot.desk import selectors as desk_selectors
from chatbot.events import send_event_on_commit, send_events_now
from chatbot.serving.selectors import active_variant_get

logger = logging.getLogger(__name__)

HANDED_BACK_TEXT = "You're chatting with our assistant again."


def _locked(conversation: Conversation) -> Conversation:
    """The conversation's row, locked, as it is now. Its agent is read after the lock, not
    joined to the locking read: a join is not read again when PostgreSQL waits for another
    writer of the row, and would show the owner from before the wait."""
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


def _announce(conversation: Conversation) -> None:
    """After the commit: the customer's page and every desk hear of the conversation's new
    state, the desks of the team's load, and the waiting customers of their places."""
    send_event_on_commit(conversation.group_name, protocol.conversation_updated(conversation=conversation))
    send_event_on_commit(
        protocol.DESK_GROUP,
        protocol.desk_conversation(conversation=desk_selectors.desk_conversation_frame(conversation)),
    )
    transaction.on_commit(presence_broadcast, robust=True)


def queue_broadcast() -> None:
    """Tell every waiting customer their place in the queue (one round trip to Redis). Called
    after each change to the queue."""
    waiting = list(
        Conversation.objects.filter(status=Conversation.Status.WAITING_FOR_AGENT).order_by("escalated_at", "id")[
            : settings.DESK_LIST_LIMIT * 10
        ]
    )
    if not waiting:
        return
    agents_online = len(desk_selectors.online_agents())
    send_events_now(
        [
            (
                conversation.group_name,
                protocol.queue_updated(
                    conversation_id=conversation.public_id,
                    queue=protocol.queue_payload(
                        position=place, agents_online=agents_online, support_hours=settings.SUPPORT_HOURS
                    ),
                ),
            )
            for place, conversation in enumerate(waiting, start=1)
        ]
    )


def _notice(conversation: Conversation, text: str) -> Message:
    """A system line in the transcript, sent live to the customer and the staff watching."""
    notice = Message.objects.create(conversation=conversation, author=Message.Author.SYSTEM, text=text)
    _message_out(conversation, notice)
    return notice


def _message_events(conversation: Conversation, message: Message) -> list[tuple[str, dict]]:
    """A new message for the customer's page and for the staff watching."""
    return [
        (conversation.group_name, protocol.message_new(message=message)),
        (conversation.staff_group_name, protocol.staff_message_new(message=message)),
    ]


def _message_out(conversation: Conversation, message: Message) -> None:
    for group, event in _message_events(conversation, message):
        send_event_on_commit(group, event)


# -- handoff: from the bot to the people ------------------------------------------------------------
def conversation_handoff(*, conversation: Conversation, reason: str, detail: str = "") -> bool:
    """Hand a conversation the bot answers to the people: it waits for an agent (or goes to one
    at once with DESK_AUTO_ASSIGN), the bot stops answering in it (an answer in progress is
    cancelled), and the reason is recorded. False (nothing changes) when the bot was no longer
    answering. Locks the conversation row."""
    with transaction.atomic():
        conversation = _locked(conversation)
        if not conversation.bot_answers:
            return False
        conversation_cancel_answers(conversation=conversation, reason="the conversation was handed to a person")
        conversation.status = Conversation.Status.WAITING_FOR_AGENT
        conversation.handoff_reason = reason
        conversation.handoff_detail = detail[:500]
        conversation.escalated_at = timezone.now()
        conversation.save(update_fields=["status", "handoff_reason", "handoff_detail", "escalated_at", "updated_at"])
        _announce(conversation)
        if settings.DESK_AUTO_ASSIGN:
            conversation_id = conversation.pk
            transaction.on_commit(lambda: conversation_auto_assign(conversation_id=conversation_id), robust=True)
    logger.info("conversation %s handed off: %s", conversation.public_id, reason)
    return True


def conversation_handoff_if_no_answer_twice(*, conversation: Conversation) -> bool:
    """The bot had no answer twice in a row (its last two messages, with nothing from a person
    between): the conversation goes to a person."""
    latest = list(
        conversation.messages.exclude(author=Message.Author.SYSTEM)
        .exclude(author=Message.Author.CUSTOMER)
        .order_by("-created_at", "-id")
        .values_list("author", "no_answer")[:2]
    )
    if len(latest) == 2 and all(author == Message.Author.BOT and no_answer for author, no_answer in latest):
        return conversation_handoff(conversation=conversation, reason=Conversation.HandoffReason.NO_ANSWER_TWICE)
    return False


# -- the desk's claim -------------------------------------------------------------------------------
def conversation_claim(*, conversation: Conversation, agent: Any) -> Conversation:
    """An agent takes the conversation over, from the queue or from the bot's live list: from
    now on the bot says nothing in it (an answer in progress is cancelled: its request leaves the
    worker's batch), and the customer is told who joined. Claiming is atomic: of two agents
    claiming at once, the second is refused with the first's name. Locks the conversation row."""
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == Conversation.Status.RESOLVED:
            raise InvalidInput("conversation_closed", "This conversation is resolved.")
        if conversation.assigned_agent_id == agent.pk:
            return conversation
        if conversation.assigned_agent_id is not None:
            raise InvalidInput(
                "already_claimed",
                f"{protocol.person_name(conversation.assigned_agent)} took this conversation over already.",
            )
        _assign(conversation, agent)
    return conversation


def _assign(conversation: Conversation, agent: Any) -> None:
    """Give a locked conversation to an agent (the claim's and the auto-assignment's own step)."""
    conversation_cancel_answers(conversation=conversation, reason="an agent took the conversation over")
    now = timezone.now()
    if conversation.status == Conversation.Status.BOT:
        conversation.handoff_reason = Conversation.HandoffReason.AGENT_TAKEOVER
        conversation.escalated_at = now
    conversation.status = Conversation.Status.WITH_AGENT
    conversation.assigned_agent = agent
    conversation.save(update_fields=["status", "assigned_agent", "handoff_reason", "escalated_at", "updated_at"])
    AgentProfile.objects.update_or_create(user=agent, defaults={"last_assigned_at": now})
    _notice(conversation, f"{protocol.person_name(agent)} from our support team joined the conversation.")
    _announce(conversation)


def conversation_auto_assign(*, conversation_id: int) -> Any | None:
    """Round robin: a waiting conversation goes to the online agent under capacity who was
    assigned one longest ago; with none, it stays in the queue. Returns the agent."""
    online = desk_selectors.online_agents()
    if not online:
        return None
    active = desk_selectors.active_counts()
    profiles = {p.user_id: p for p in AgentProfile.objects.filter(user__in=online)}
    free = [
        agent
        for agent in online
        if active.get(agent.pk, 0)
        < (
            profiles[agent.pk].capacity
            if agent.pk in profiles and profiles[agent.pk].capacity is not None
            else settings.DESK_AGENT_CAPACITY
        )
    ]
    if not free:
        return None
    never = timezone.now() - timezone.timedelta(days=36500)
    free.sort(key=lambda agent: (getattr(profiles.get(agent.pk), "last_assigned_at", None) or never, agent.pk))
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update(of=("self",)).filter(pk=conversation_id).first()
        if conversation is None or conversation.status != Conversation.Status.WAITING_FOR_AGENT:
            return None
        _assign(conversation, free[0])
    return free[0]


# -- the owner's actions -----------------------------------------------------------------------------
def _owned(conversation: Conversation, agent: Any, *, action: str) -> Conversation:
    """The locked conversation, if this agent owns it; else the clear refusal."""
    conversation = _locked(conversation)
    if conversation.status == Conversation.Status.RESOLVED:
        raise InvalidInput("conversation_closed", f"This conversation is resolved; you cannot {action} it.")
    if conversation.assigned_agent_id is None:
        raise InvalidInput("not_claimed", f"Take the conversation over before you {action} it.")
    if conversation.assigned_agent_id != agent.pk:
        raise InvalidInput(
            "not_yours", f"{protocol.person_name(conversation.assigned_agent)} handles this conversation, not you."
        )
    return conversation


@dataclass
class AgentPost:
    conversation: Conversation
    message: Message
    created: bool
    # The reply's events (to the customer, the staff watching, the desks' lists), for the desk's
    # socket to send once the reply is stored: from its own event loop, at once, rather than one
    # hop after another from the database thread (on the way to the customer seeing the reply).
    events: list[tuple[str, dict]] = field(default_factory=list)


def agent_message_post(*, conversation: Conversation, agent: Any, text: Any, client_id: Any) -> AgentPost:
    """The owning agent's reply, for the customer to see live (`AgentPost.events`). A resent
    `client_id` returns the stored message instead of a second copy. Locks the conversation row."""
    text = message_text_validate(text=text)
    client_id = client_id_validate(client_id=client_id)
    with transaction.atomic():
        conversation = _owned(conversation, agent, action="reply to")
        existing = conversation.messages.filter(client_id=client_id).first()
        if existing is not None:
            return AgentPost(conversation=conversation, message=existing, created=False)
        message = Message.objects.create(
            conversation=conversation, author=Message.Author.AGENT, author_user=agent, text=text, client_id=client_id
        )
        conversation.last_message_at = message.created_at
        fields = ["last_message_at", "updated_at"]
        for first in ("first_agent_reply_at", "first_response_at"):
            if getattr(conversation, first) is None:
                setattr(conversation, first, message.created_at)
                fields.append(first)
        conversation.save(update_fields=fields)
    events = [
        *_message_events(conversation, message),
        (
            protocol.DESK_GROUP,
            protocol.desk_conversation(
                conversation=protocol.desk_conversation_payload(conversation, last_message=text)
            ),
        ),
    ]
    return AgentPost(conversation=conversation, message=message, created=True, events=events)


def note_add(*, conversation: Conversation, agent: Any, text: Any) -> Note:
    """A private note: staff watching the conversation see it; the customer and the model never."""
    text = message_text_validate(text=text)
    with transaction.atomic():
        conversation = _locked(conversation)
        note = Note.objects.create(conversation=conversation, author=agent, text=text)
        send_event_on_commit(
            conversation.staff_group_name, protocol.note_new(conversation_id=conversation.public_id, note=note)
        )
    return note


def conversation_hand_back(*, conversation: Conversation, agent: Any) -> Conversation:
    """The owning agent gives the conversation back to the bot, which answers the customer's
    next message. Locks the conversation row."""
    with transaction.atomic():
        conversation = _owned(conversation, agent, action="hand back")
        conversation.status = Conversation.Status.BOT
        conversation.assigned_agent = None
        conversation.save(update_fields=["status", "assigned_agent", "updated_at"])
        _notice(conversation, HANDED_BACK_TEXT)
        _announce(conversation)
    return conversation


def conversation_resolve(*, conversation: Conversation, agent: Any) -> Conversation:
    """The owning agent resolves the conversation; it is credited to them. Locks the row."""
    with transaction.atomic():
        conversation = _owned(conversation, agent, action="resolve")
        _resolve(conversation, by=Conversation.ResolvedBy.AGENT, agent=agent)
    return conversation


def conversation_resolve_by_customer(*, conversation: Conversation) -> Conversation:
    """The customer ended the chat ("This solved my problem", "End chat"). Locks the row;
    resolving a resolved conversation again changes nothing."""
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status != Conversation.Status.RESOLVED:
            _resolve(conversation, by=Conversation.ResolvedBy.CUSTOMER)
    return conversation


def conversations_resolve_idle(*, now: Any = None) -> int:
    """The bot resolves the conversations it answers where the customer has said nothing for
    RESOLVE_AFTER_IDLE_MINUTES since its last answer (the customer is asked for a rating if their
    page is open, and on their next visit). Part of the sweep every worker runs; the row locks
    (skipping rows another sweeper holds) make sweepers agree. Returns how many it resolved."""
    cutoff = (now or timezone.now()) - timezone.timedelta(minutes=settings.RESOLVE_AFTER_IDLE_MINUTES)
    candidates = Conversation.objects.filter(status=Conversation.Status.BOT, last_message_at__lt=cutoff)
    resolved = 0
    for candidate in candidates.values_list("pk", flat=True)[:200]:
        with transaction.atomic():
            conversation = (
                Conversation.objects.select_for_update(skip_locked=True)
                .filter(pk=candidate, status=Conversation.Status.BOT, last_message_at__lt=cutoff)
                .first()
            )
            if conversation is None:
                continue
            last = (
                conversation.messages.exclude(author=Message.Author.SYSTEM)
                .order_by("-created_at", "-id")
                .values_list("author", flat=True)
                .first()
            )
            if last != Message.Author.BOT:
                continue  # the customer's message waits for an answer (or the bot never answered)
            _resolve(conversation, by=Conversation.ResolvedBy.BOT)
            resolved += 1
    return resolved


def _resolve(conversation: Conversation, *, by: str, agent: Any = None) -> None:
    """Resolve a locked conversation: whatever the bot still has in progress stops, and the
    customer and the desk are told (the customer's page then asks for a rating)."""
    conversation_cancel_answers(conversation=conversation, reason="the conversation was resolved")
    conversation.status = Conversation.Status.RESOLVED
    conversation.resolved_at = timezone.now()
    conversation.resolved_by = by
    conversation.resolved_by_agent = agent
    conversation.save(update_fields=["status", "resolved_at", "resolved_by", "resolved_by_agent", "updated_at"])
    _announce(conversation)


def suggestion_request(*, conversation: Conversation, agent: Any) -> Generation:
    """The model drafts a reply for the owning agent: a generation of its own kind, through the
    same queue, worker and engine as the bot's answers, streamed to the staff watching only and
    never sent to the customer by itself. Locks the conversation row."""
    with transaction.atomic():
        conversation = _owned(conversation, agent, action="draft a reply for")
        last_customer = (
            conversation.messages.filter(author=Message.Author.CUSTOMER).order_by("-created_at", "-id").first()
        )
        if last_customer is None:
            raise InvalidInput("no_customer_message", "The customer has not written anything to reply to yet.")
        generation = Generation.objects.create(
            conversation=conversation,
            prompt_message=last_customer,
            kind=Generation.Kind.SUGGESTION,
            requested_by=agent,
            model_variant=active_variant_get(),
        )
        transaction.on_commit(lambda: generation_enqueue(generation=generation, notify_failure=True))
    return generation


def suggestion_cancel(*, conversation: Conversation, agent: Any, generation_id: Any) -> bool:
    """The agent discards a suggestion still being drafted: it leaves the worker's batch. False
    when it had ended already."""
    suggestion = Generation.objects.filter(
        pk=generation_id if isinstance(generation_id, int) else None,
        conversation=conversation,
        kind=Generation.Kind.SUGGESTION,
        requested_by=agent,
    ).first()
    if suggestion is None:
        raise InvalidInput("suggestion_not_found", "There is no such suggestion of yours in this conversation.")
    with transaction.atomic():
        return generation_cancel(generation=suggestion, reason="the agent discarded the suggestion")


def agent_presence_set(*, agent: Any, presence: Any) -> AgentProfile:
    if presence not in AgentProfile.Presence.values:
        raise InvalidInput("malformed", f"presence must be one of {', '.join(AgentProfile.Presence.values)}.")
    profile, _ = AgentProfile.objects.update_or_create(user=agent, defaults={"presence": presence})
    transaction.on_commit(presence_broadcast, robust=True)
    return profile


def presence_broadcast() -> None:
    """The team's presence or load changed (a desk opened or closed, an agent went away, took,
    handed back or resolved a conversation): every desk sees the agents, and waiting customers
    their place and whether anyone is online."""
    send_events_now([(protocol.DESK_GROUP, protocol.desk_agents(agents=desk_selectors.agent_frames()))])
    queue_broadcast()
