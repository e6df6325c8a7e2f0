"""Turning a growing list of generated token ids into answer and reasoning text. Imports no torch.

R1 models reason first: the prompt ends with `<think>\\n`, so the generation starts inside the
reasoning, closes it with `</think>`, then writes the answer. The customer must never see the
reasoning as answer text, so the split happens here, once, for streaming and for the stored
message alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class SplitText:
    reasoning: str
    answer: str
    in_reasoning: bool  # the closing tag has not been generated yet
    hidden: str = ""  # what follows the answer from the first `hide_from` marker on (an action)


def split_reasoning(text: str, hide_from: Sequence[str] = ()) -> SplitText:
    """Split generated text (which starts inside `<think>`) into reasoning and answer; the answer
    ends where any `hide_from` marker starts (the handoff action's block, say), and that rest is
    `hidden`: never shown, parsed by the worker."""
    head, sep, tail = text.partition(THINK_CLOSE)
    if not sep:
        return SplitText(reasoning=_strip_tags(head).strip(), answer="", in_reasoning=True)
    hidden = ""
    cut = min((i for i in (tail.find(marker) for marker in hide_from if marker) if i >= 0), default=-1)
    if cut >= 0:
        tail, hidden = tail[:cut], tail[cut:]
    # Anything tag-like the model writes after the reasoning is dropped from the answer, so a
    # confused model cannot show `<think>` text to the customer.
    return SplitText(
        reasoning=_strip_tags(head).strip(), answer=_strip_tags(tail).strip(), in_reasoning=False, hidden=hidden
    )


def _strip_tags(text: str) -> str:
    return text.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")


class IncrementalDecoder:
    """Decodes a growing token list and yields what is new of the answer and the reasoning.

    `decode` is the tokenizer's decode (special tokens kept, since `</think>` is one). Text that
    could still change is held back: a trailing partial UTF-8 character (byte-level BPE decodes
    it as U+FFFD) or a trailing prefix of `</think>` or of a `hide_from` marker, so that a marker
    split across tokens (`<`, `hand`, `off>` from a model that writes it as text) never shows.
    """

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        stop_strings: Sequence[str] = (),
        hide_from: Sequence[str] = (),
    ) -> None:
        self._decode = decode
        self._stop_strings = tuple(s for s in stop_strings if s)
        self._hide_from = tuple(m for m in hide_from if m)
        self._answer_sent = 0
        self._reasoning_sent = 0
        self.text = ""

    def _clean(self, text: str) -> str:
        for stop in self._stop_strings:
            text = text.replace(stop, "")
        return text

    def update(self, token_ids: Sequence[int], *, final: bool = False) -> tuple[str, str]:
        """Return (reasoning_delta, answer_delta) since the previous call."""
        text = self._clean(self._decode(token_ids))
        self.text = text
        if not final:
            text = text.rstrip("\ufffd")
            text = text[: len(text) - _partial_marker(text, (THINK_CLOSE, *self._hide_from))]
        split = split_reasoning(text, self._hide_from)
        # The answer is stripped at the end as a whole; while streaming keep trailing spaces back
        # so that the deltas concatenate to the final answer exactly.
        answer = split.answer if final else split.answer.rstrip()
        reasoning = split.reasoning if final else split.reasoning.rstrip()
        answer_delta = answer[self._answer_sent :] if len(answer) > self._answer_sent else ""
        reasoning_delta = reasoning[self._reasoning_sent :] if len(reasoning) > self._reasoning_sent else ""
        self._answer_sent = max(self._answer_sent, len(answer))
        self._reasoning_sent = max(self._reasoning_sent, len(reasoning))
        return reasoning_delta, answer_delta

    def result(self) -> SplitText:
        return split_reasoning(self.text, self._hide_from)


def _partial_marker(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper start of one of `markers`."""
    longest = 0
    for marker in markers:
        for cut in range(len(marker) - 1, longest, -1):
            if text.endswith(marker[:cut]):
                longest = cut
                break
    return longest
