"""Every frame the server sends on a socket, built here and only here (docs/protocol.md).

Consumers, services and the worker's streaming call these builders; nothing else writes a
server-to-client frame by hand. `SERVER_EVENTS` maps each event type to its builder, and a test
checks it against the tables of docs/protocol.md both ways.

The payloads never carry a bot message's reasoning: everything here may reach customers, except
the frames `STAFF_ONLY_EVENTS` names, which go to staff groups only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatbot.conversations.models import Conversation, Generation, Message, Note

Frame = dict[str, Any]

# A client's idempotency key for a message (`message.send`'s `client_id`).
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidInput(ValueError):
    """Input refused with a protocol error code (docs/protocol.md, "Errors"); nothing stored."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# -- groups: where the events of a conversation go ------------------------------------------------
def conversation_group(public_id: str) -> str:
    """Channels group of every socket showing this conversation to its customer."""
    return f"conv.{public_id}"


def conversation_staff_group(public_id: str) -> str:
    """Channels group of staff views of this conversation (they may read the reasoning)."""
    return f"staff.conv.{public_id}"


# Every desk socket: changes to the lists (a conversation waiting, claimed, resolved...), presence.
DESK_GROUP = "desk"


# -- payloads ---------------------------------------------------------------------------------------
def person_name(user: Any) -> str:
    """How staff are named to customers and to each other: their first name, else their login."""
    return user.get_short_name() or user.get_username()


def conversation_payload(conversation: Conversation | None) -> Frame | None:
    """What a customer sees of their conversation. Reads `assigned_agent` (load it with the row)."""
    if conversation is None:
        return None
    agent = conversation.assigned_agent if conversation.assigned_agent_id else None
    return {
        "id": conversation.public_id,
        "status": conversation.status,
        "created_at": conversation.created_at.isoformat(),
        "agent": None if agent is None else {"name": person_name(agent)},
    }


def message_payload(message: Message) -> Frame:
    """Never the reasoning: this goes to customers. An agent's message carries the agent's name
    (read `author_user` with the message)."""
    return {
        "id": message.pk,
        "author": message.author,
        "author_name": person_name(message.author_user) if message.author_user_id else None,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "generation_id": message.generation_id,
        # The help-center passages a bot answer names, as links ([n] in the text is its "n").
        "sources": [
            {"n": s.get("n"), "title": s.get("title", ""), "heading": s.get("heading", ""), "url": s.get("url", "")}
            for s in message.sources
        ],
    }


def generation_payload(generation: Generation | None) -> Frame | None:
    if generation is None:
        return None
    return {"id": generation.pk, "status": generation.status}


def queue_payload(*, position: int | None, agents_online: int, support_hours: str) -> Frame:
    """A waiting customer's place in the queue for a person (1 = next), how many agents are
    online (0: the team is away; `support_hours` says when it is there)."""
    return {"position": position, "agents_online": agents_online, "support_hours": support_hours}


def rating_payload(rating: Any) -> Frame | None:
    if rating is None:
        return None
    return {"score": rating.score, "comment": rating.comment, "created_at": rating.created_at.isoformat()}


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()


def staff_message_payload(message: Message) -> Frame:
    """A message as staff see it: a bot answer's reasoning and measures, an agent's name."""
    return {
        **message_payload(message),
        "reasoning": message.reasoning,
        "model_variant": message.model_variant,
        "time_to_first_token_ms": message.time_to_first_token_ms,
        "no_answer": message.no_answer,
        # Every passage the answer was given (cited or not), with its text as it was then.
        "passages": message.passages or [],
        "answer_check": message.answer_check,
    }


def note_payload(note: Note) -> Frame:
    return {
        "id": note.pk,
        "author_name": person_name(note.author) if note.author_id else None,
        "text": note.text,
        "created_at": note.created_at.isoformat(),
    }


def desk_conversation_payload(conversation: Conversation, *, last_message: str = "") -> Frame:
    """A conversation as the desk's lists show it. Reads `assigned_agent` (load it with the row)."""
    agent = conversation.assigned_agent if conversation.assigned_agent_id else None
    return {
        "id": conversation.public_id,
        "status": conversation.status,
        "customer": f"Visitor {conversation.visitor_id[:6]}",
        "created_at": conversation.created_at.isoformat(),
        "last_message_at": _iso(conversation.last_message_at),
        "last_message": last_message[:200],
        "escalated_at": _iso(conversation.escalated_at),
        "handoff_reason": conversation.handoff_reason,
        "handoff_reason_label": conversation.get_handoff_reason_display() if conversation.handoff_reason else "",
        "handoff_detail": conversation.handoff_detail,
        "resolved_at": _iso(conversation.resolved_at),
        "agent": None if agent is None else {"id": agent.pk, "name": person_name(agent)},
    }


def agent_payload(*, user: Any, presence: str, connected: bool, capacity: int, active: int) -> Frame:
    return {
        "id": user.pk,
        "name": person_name(user),
        "presence": presence if connected else "offline",
        "capacity": capacity,
        "active": active,
    }


def _with_attempt(frame: Frame, attempt: int | None) -> Frame:
    # Frames the worker sends carry the run they belong to; frames the web sends carry none.
    if attempt is not None:
        frame["attempt"] = attempt
    return frame


# -- server -> client events ------------------------------------------------------------------------
def history(
    *,
    conversation: Conversation | None,
    messages: Iterable[Message],
    generation: Generation | None,
    queue: Frame | None = None,
    rating: Any = None,
) -> Frame:
    return {
        "type": "history",
        "conversation": conversation_payload(conversation),
        "messages": [message_payload(message) for message in messages],
        "generation": generation_payload(generation),
        "queue": queue,
        "rating": rating_payload(rating),
    }


def message_saved(*, client_id: str, message: Message, conversation: Conversation) -> Frame:
    return {
        "type": "message.saved",
        "client_id": client_id,
        "message": message_payload(message),
        "conversation": conversation_payload(conversation),
    }


def generation_queued(*, generation_id: int, position: int | None, attempt: int | None = None) -> Frame:
    return _with_attempt({"type": "generation.queued", "generation_id": generation_id, "position": position}, attempt)


def generation_started(*, generation_id: int, model_variant: str, attempt: int) -> Frame:
    return {
        "type": "generation.started",
        "generation_id": generation_id,
        "model_variant": model_variant,
        "attempt": attempt,
    }


def answer_thinking(*, generation_id: int, attempt: int) -> Frame:
    return {"type": "answer.thinking", "generation_id": generation_id, "attempt": attempt}


def answer_delta(*, generation_id: int, text: str, attempt: int) -> Frame:
    return {"type": "answer.delta", "generation_id": generation_id, "text": text, "attempt": attempt}


def answer_done(*, message: Message, attempt: int | None = None) -> Frame:
    return _with_attempt(
        {"type": "answer.done", "generation_id": message.generation_id, "message": message_payload(message)}, attempt
    )


def generation_failed(*, generation_id: int, detail: str, attempt: int | None = None) -> Frame:
    return _with_attempt({"type": "generation.failed", "generation_id": generation_id, "detail": detail}, attempt)


def generation_cancelled(*, generation_id: int) -> Frame:
    return {"type": "generation.cancelled", "generation_id": generation_id}


def message_new(*, message: Message) -> Frame:
    return {"type": "message.new", "message": message_payload(message)}


def error(*, code: str, detail: str, frame: Any = None) -> Frame:
    """An `error` frame; with the refused frame, it says which one it was (its `type`, and its
    `client_id` where that is well formed), so the page can mark the right message as not sent."""
    refusal: Frame = {"type": "error", "code": code, "detail": detail}
    if isinstance(frame, dict):
        if isinstance(frame.get("type"), str):
            refusal["frame_type"] = frame["type"][:40]
        client_id = frame.get("client_id")
        if isinstance(client_id, str) and CLIENT_ID_RE.match(client_id):
            refusal["client_id"] = client_id
    return refusal


def pong() -> Frame:
    return {"type": "pong"}


def rating_saved(*, conversation_id: str, rating: Any) -> Frame:
    return {"type": "rating.saved", "conversation_id": conversation_id, "rating": rating_payload(rating)}


def conversation_updated(*, conversation: Conversation) -> Frame:
    return {"type": "conversation.updated", "conversation": conversation_payload(conversation)}


def queue_updated(*, conversation_id: str, queue: Frame) -> Frame:
    return {"type": "queue.updated", "conversation_id": conversation_id, **queue}


def typing(*, conversation_id: str, author: str, active: bool, name: str | None = None) -> Frame:
    return {"type": "typing", "conversation_id": conversation_id, "author": author, "name": name, "active": active}


# -- server -> desk sockets (staff) -----------------------------------------------------------------
def desk_snapshot(*, me: Frame, agents: list[Frame], lists: dict[str, list[Frame]], support_hours: str) -> Frame:
    return {"type": "desk.snapshot", "me": me, "agents": agents, "lists": lists, "support_hours": support_hours}


def desk_conversation(*, conversation: Frame) -> Frame:
    return {"type": "desk.conversation", "conversation": conversation}


def desk_agents(*, agents: list[Frame]) -> Frame:
    return {"type": "desk.agents", "agents": agents}


def conversation_detail(
    *, conversation: Frame, messages: Iterable[Message], notes: Iterable[Note], generation: Generation | None
) -> Frame:
    return {
        "type": "conversation.detail",
        "conversation": conversation,
        "messages": [staff_message_payload(message) for message in messages],
        "notes": [note_payload(note) for note in notes],
        "generation": generation_payload(generation),
    }


def staff_message_new(*, message: Message) -> Frame:
    return {
        "type": "staff.message.new",
        "conversation_id": message.conversation.public_id,
        "message": staff_message_payload(message),
    }


def note_new(*, conversation_id: str, note: Note) -> Frame:
    return {"type": "note.new", "conversation_id": conversation_id, "note": note_payload(note)}


def suggestion_queued(*, conversation_id: str, generation_id: int) -> Frame:
    return {"type": "suggestion.queued", "conversation_id": conversation_id, "generation_id": generation_id}


def suggestion_delta(*, generation_id: int, text: str) -> Frame:
    return {"type": "suggestion.delta", "generation_id": generation_id, "text": text}


def suggestion_done(*, generation_id: int, text: str) -> Frame:
    return {"type": "suggestion.done", "generation_id": generation_id, "text": text}


def suggestion_failed(*, generation_id: int, detail: str) -> Frame:
    return {"type": "suggestion.failed", "generation_id": generation_id, "detail": detail}


def reasoning_delta(*, generation_id: int, text: str, attempt: int) -> Frame:
    """The next piece of a bot answer's reasoning: staff groups only, never a customer's."""
    return {"type": "reasoning.delta", "generation_id": generation_id, "text": text, "attempt": attempt}


SERVER_EVENTS: dict[str, Callable[..., Frame]] = {
    "history": history,
    "message.saved": message_saved,
    "generation.queued": generation_queued,
    "generation.started": generation_started,
    "answer.thinking": answer_thinking,
    "answer.delta": answer_delta,
    "answer.done": answer_done,
    "generation.failed": generation_failed,
    "generation.cancelled": generation_cancelled,
    "message.new": message_new,
    "error": error,
    "pong": pong,
    "conversation.updated": conversation_updated,
    "rating.saved": rating_saved,
    "queue.updated": queue_updated,
    "typing": typing,
    "reasoning.delta": reasoning_delta,
    "desk.snapshot": desk_snapshot,
    "desk.conversation": desk_conversation,
    "desk.agents": desk_agents,
    "conversation.detail": conversation_detail,
    "staff.message.new": staff_message_new,
    "note.new": note_new,
    "suggestion.queued": suggestion_queued,
    "suggestion.delta": suggestion_delta,
    "suggestion.done": suggestion_done,
    "suggestion.failed": suggestion_failed,
}
# Frames for staff sockets only: they may carry reasoning, notes, suggestions, agents' names.
STAFF_ONLY_EVENTS = frozenset(
    {
        "reasoning.delta",
        "desk.snapshot",
        "desk.conversation",
        "desk.agents",
        "conversation.detail",
        "staff.message.new",
        "note.new",
        "suggestion.queued",
        "suggestion.delta",
        "suggestion.done",
        "suggestion.failed",
    }
)
