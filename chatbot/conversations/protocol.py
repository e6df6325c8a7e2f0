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
    from chatbot.conversations.models import Conversation, Generation, Message

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


# -- payloads ---------------------------------------------------------------------------------------
def conversation_payload(conversation: Conversation | None) -> Frame | None:
    if conversation is None:
        return None
    return {
        "id": conversation.public_id,
        "status": conversation.status,
        "created_at": conversation.created_at.isoformat(),
    }


def message_payload(message: Message) -> Frame:
    # Never the reasoning: this goes to customers.
    return {
        "id": message.pk,
        "author": message.author,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "generation_id": message.generation_id,
    }


def generation_payload(generation: Generation | None) -> Frame | None:
    if generation is None:
        return None
    return {"id": generation.pk, "status": generation.status}


def _with_attempt(frame: Frame, attempt: int | None) -> Frame:
    # Frames the worker sends carry the run they belong to; frames the web sends carry none.
    if attempt is not None:
        frame["attempt"] = attempt
    return frame


# -- server -> client events ------------------------------------------------------------------------
def history(*, conversation: Conversation | None, messages: Iterable[Message], generation: Generation | None) -> Frame:
    return {
        "type": "history",
        "conversation": conversation_payload(conversation),
        "messages": [message_payload(message) for message in messages],
        "generation": generation_payload(generation),
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
    "reasoning.delta": reasoning_delta,
}
STAFF_ONLY_EVENTS = frozenset({"reasoning.delta"})
