"""The model's own handoff action: how an answer says "a person must take this over".

The action is a small tagged block after the answer::

    I'm sorry about this experience. I'm passing your complaint to a colleague ...
    <handoff>complaint</handoff>

In the demo model ``<handoff>`` and ``</handoff>`` are added tokens (like ``<think>``); a real
R1-Distill checkpoint writes them as plain text when its system prompt asks it to
(docs/deployment.md has the instruction). The worker parses the decoded text, so both work the
same. The block never reaches the customer: the stream holds it back (engine/stream.py) and the
stored answer is the text before it. The worker never guesses a handoff from the answer's words:
only this block hands off. Imports no torch and no Django.
"""

from __future__ import annotations

from dataclasses import dataclass

HANDOFF_OPEN = "<handoff>"
HANDOFF_CLOSE = "</handoff>"

# The reasons the demo model is trained to give. A real checkpoint may write its own words
# instead: they are kept as the handoff's detail, cut to REASON_MAX_CHARS.
REASONS = {
    "customer_request": "The customer asked for a person",
    "complaint": "A complaint the bot cannot resolve",
    "legal": "The customer mentions legal action",
    "angry": "The customer is angry",
    "not_in_help_center": "The help center has no answer to this",
}
REASON_MAX_CHARS = 200
UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class HandoffAction:
    reason: str  # a REASONS key, the model's own words, or UNSPECIFIED
    well_formed: bool  # False: the block was opened but never closed (cut off, say)

    @property
    def detail(self) -> str:
        """The reason as recorded on the conversation (Conversation.handoff_detail)."""
        label = REASONS.get(self.reason)
        return f"{self.reason}: {label}" if label else self.reason


def parse_handoff(hidden: str) -> HandoffAction | None:
    """The action in the text the answer hid (what follows the answer, from ``<handoff>`` on).

    None when there is no block. An opened block that never closes still hands off (the model
    asked for a person and was cut off, e.g. by the token limit), its reason ``unspecified``
    when nothing usable follows the tag; a close tag alone is no action.
    """
    start = hidden.find(HANDOFF_OPEN)
    if start < 0:
        return None
    body = hidden[start + len(HANDOFF_OPEN) :]
    reason, closed, _ = body.partition(HANDOFF_CLOSE)
    reason = " ".join(reason.replace(HANDOFF_OPEN, " ").split())[:REASON_MAX_CHARS]
    return HandoffAction(reason=reason or UNSPECIFIED, well_formed=bool(closed))
