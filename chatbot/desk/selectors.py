"""Reads for the agents' desk: its lists, one conversation as staff see it, the queue and the
agents. Each list is one indexed query with a limit, whatever the number of conversations."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from chatbot.conversations import protocol
from chatbot.conversations.models import AgentProfile, Conversation, Generation, Message
from chatbot.desk.presence import connected_agent_ids

PERMISSION = "conversations.handle_conversations"


def _with_last_message(queryset):
    latest = Message.objects.filter(conversation=OuterRef("pk")).exclude(author=Message.Author.SYSTEM)
    return queryset.select_related("assigned_agent").annotate(
        last_text=Subquery(latest.order_by("-created_at", "-id").values("text")[:1])
    )


def desk_conversation_frame(conversation: Conversation) -> dict[str, Any]:
    """The list entry of one conversation (reads its latest message)."""
    last = (
        conversation.messages.exclude(author=Message.Author.SYSTEM)
        .order_by("-created_at", "-id")
        .values_list("text", flat=True)
        .first()
    )
    return protocol.desk_conversation_payload(conversation, last_message=last or "")


def desk_lists(*, agent: Any) -> dict[str, list[dict[str, Any]]]:
    """The desk's four lists: waiting for a person (oldest first), this agent's own, the bot's
    live conversations (to watch), recently resolved."""
    limit = settings.DESK_LIST_LIMIT
    status = Conversation.Status
    live_since = timezone.now() - timezone.timedelta(minutes=settings.DESK_BOT_LIVE_MINUTES)
    queries = {
        "waiting": Conversation.objects.filter(status=status.WAITING_FOR_AGENT).order_by("escalated_at", "id"),
        "mine": Conversation.objects.filter(assigned_agent=agent, status=status.WITH_AGENT).order_by(
            "-last_message_at"
        ),
        "bot": Conversation.objects.filter(status=status.BOT, last_message_at__gte=live_since).order_by(
            "-last_message_at"
        ),
        "resolved": Conversation.objects.filter(status=status.RESOLVED).order_by("-resolved_at"),
    }
    return {
        name: [
            protocol.desk_conversation_payload(conversation, last_message=conversation.last_text or "")
            for conversation in _with_last_message(query)[:limit]
        ]
        for name, query in queries.items()
    }


def conversation_for_staff(*, public_id: Any) -> Conversation | None:
    if not isinstance(public_id, str) or not public_id:
        return None
    return Conversation.objects.select_related("assigned_agent").filter(public_id=public_id).first()


def conversation_detail_frame(*, conversation: Conversation) -> dict[str, Any]:
    """One conversation as staff see it: every message with the bot's reasoning and measures,
    the private notes, the answer in progress."""
    messages = list(
        conversation.messages.select_related("author_user").order_by("-created_at", "-id")[
            : settings.HISTORY_MAX_MESSAGES
        ]
    )
    messages.reverse()
    generation = (
        conversation.generations.filter(status__in=Generation.OPEN_STATUSES, kind=Generation.Kind.ANSWER)
        .order_by("-created_at")
        .first()
    )
    return protocol.conversation_detail(
        conversation=desk_conversation_frame(conversation),
        messages=messages,
        notes=conversation.notes.select_related("author"),
        generation=generation,
    )


def queue_position(*, conversation: Conversation) -> int | None:
    """The conversation's place among those waiting for a person (1 = next); None if it is not
    waiting."""
    if conversation.status != Conversation.Status.WAITING_FOR_AGENT or conversation.escalated_at is None:
        return None
    ahead = Conversation.objects.filter(status=Conversation.Status.WAITING_FOR_AGENT).filter(
        Q(escalated_at__lt=conversation.escalated_at)
        | Q(escalated_at=conversation.escalated_at, pk__lt=conversation.pk)
    )
    return ahead.count() + 1


def online_agents() -> list[Any]:
    """Agents who can take conversations now: a desk socket open and their presence "online"."""
    connected = connected_agent_ids()
    if not connected:
        return []
    users = get_user_model().objects.filter(pk__in=connected, is_active=True, is_staff=True)
    away = set(
        AgentProfile.objects.filter(user__in=users)
        .exclude(presence=AgentProfile.Presence.ONLINE)
        .values_list("user_id", flat=True)
    )
    return [user for user in users if user.pk not in away and user.has_perm(PERMISSION)]


def customer_queue_payload(*, conversation: Conversation) -> dict[str, Any] | None:
    """What a waiting customer is told: their place, whether anyone is online, the hours."""
    position = queue_position(conversation=conversation)
    if position is None:
        return None
    return protocol.queue_payload(
        position=position, agents_online=len(online_agents()), support_hours=settings.SUPPORT_HOURS
    )


def agent_capacity(user: Any) -> int:
    profile = AgentProfile.objects.filter(user=user).first()
    if profile is not None and profile.capacity is not None:
        return profile.capacity
    return settings.DESK_AGENT_CAPACITY


def active_counts() -> dict[int, int]:
    """Conversations each agent has now (user id -> count)."""
    rows = (
        Conversation.objects.filter(status=Conversation.Status.WITH_AGENT)
        .values("assigned_agent")
        .annotate(count=Count("id"))
    )
    return {row["assigned_agent"]: row["count"] for row in rows}


def desk_staff() -> list[Any]:
    """Every active staff member who may use the desk, with their profile loaded."""
    users = get_user_model().objects.filter(is_active=True, is_staff=True).select_related("agent_profile")
    return [user for user in users if user.has_perm(PERMISSION)]


def agent_frames() -> list[dict[str, Any]]:
    """Every staff member who may use the desk, with their presence and load."""
    connected = connected_agent_ids()
    active = active_counts()
    frames = []
    for user in desk_staff():
        profile = getattr(user, "agent_profile", None)
        frames.append(
            protocol.agent_payload(
                user=user,
                presence=profile.presence if profile else AgentProfile.Presence.ONLINE,
                connected=user.pk in connected,
                capacity=profile.capacity if profile and profile.capacity is not None else settings.DESK_AGENT_CAPACITY,
                active=active.get(user.pk, 0),
            )
        )
    return frames
