"""The knowledge base in the model's prompt: the passages retrieval finds for the customer's latest
message go into that user turn (as DeepSeek advises for R1: no system prompt), within the prompt
budget, and the answer's ``[n]`` citations name its sources.

With no published article the prompt is the conversation alone, as before the knowledge base:
a deployment that has not written its help center yet keeps the model's own answers. With one,
every answer reads the help center; when nothing is relevant enough the prompt says so, and the
model says it does not know and hands over instead of guessing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatbot.knowledge import text as kb

logger = logging.getLogger(__name__)

# The prompt budget is split: up to this share for the help center's passages, the rest for the
# conversation, which never takes the passages' share, with or without a knowledge base (the demo
# model answers worse the more history it reads: 192 tokens of its 384, as before the passages).
PASSAGE_SHARE = 0.5

# What the bot says when the help center has nothing on a store question (the answer check's
# word, and what the demo model is trained to say); the conversation then goes to a person.
NOT_FOUND_TEXT = (
    "I'm sorry, I couldn't find that in our help center, and I don't want to guess. "
    "I'm passing you to a colleague from our team, who will answer you here."
)
NOT_FOUND_REASON = "not_in_help_center"
_FIGURES = re.compile(r"\d+")

Search = Callable[[str], list[kb.Passage]]


@dataclass
class Grounding:
    """What one answer was given from the knowledge base."""

    query: str
    passages: list[kb.Passage] = field(default_factory=list)
    extra_tokens: int = 0  # what the passages and the instruction add to the customer's turn

    def snapshots(self, answer: str) -> list[dict[str, Any]]:
        """Message.passages: every passage given, as it was, and whether the answer cites it."""
        cited = set(kb.cited_numbers(answer, len(self.passages)))
        return [{**p.snapshot(n), "cited": n in cited} for n, p in enumerate(self.passages, 1)]


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def conversation_budget(total: int) -> int:
    """The conversation's part of a prompt budget of ``total`` tokens."""
    return total - int(total * PASSAGE_SHARE)


def prompt_tokens(total: int, extra_tokens: int = 0) -> int:
    """The budget to build the prompt with: the conversation's part, and what the passages add."""
    return min(total, conversation_budget(total) + max(0, extra_tokens))


def passages_extra_tokens(tokenizer: Any, content: str, question: str) -> int:
    return _tokens(tokenizer, content) - _tokens(tokenizer, question)


def fit_passages(
    *, tokenizer: Any, question: str, passages: Sequence[kb.Passage], max_tokens: int, instruction: str
) -> list[kb.Passage]:
    """The best passages whose turn (passages, instruction, question) fits ``max_tokens``: the
    lowest ranked go first."""
    kept = list(passages)
    while kept and _tokens(tokenizer, kb.grounded_content(question, kept, instruction=instruction)) > max_tokens:
        kept.pop()
    return kept


def ground_turns(
    *,
    turns: list[dict[str, str]],
    tokenizer: Any,
    budget_tokens: int,
    instruction: str,
    search: Search | None,
) -> tuple[list[dict[str, str]], Grounding | None]:
    """The conversation's turns as the model reads them: earlier answers without their ``[n]``
    markers (their passages are gone), and, when ``search`` is given (a knowledge base is
    there), the last customer turn with the passages found for it."""
    turns = [
        {"role": t["role"], "content": kb.strip_citations(t["content"])} if t["role"] == "assistant" else dict(t)
        for t in turns
    ]
    if search is None or not turns or turns[-1]["role"] != "user":
        return turns, None
    question = turns[-1]["content"]
    query = kb.query_text([t["content"] for t in turns if t["role"] == "user"])
    try:
        found = search(query)
    except Exception:  # the answer still comes, saying it found nothing rather than guessing
        logger.exception("knowledge base search failed; answering without passages")
        found = []
    passages = fit_passages(
        tokenizer=tokenizer,
        question=question,
        passages=found,
        max_tokens=int(budget_tokens * PASSAGE_SHARE) + _tokens(tokenizer, question),
        instruction=instruction,
    )
    content = kb.grounded_content(question, passages, instruction=instruction)
    turns[-1] = {"role": "user", "content": content}
    extra = passages_extra_tokens(tokenizer, content, question)
    return turns, Grounding(query=query, passages=passages, extra_tokens=extra)


def knowledge_search() -> Search | None:
    """The product's retrieval when the knowledge base has a published article, else None."""
    from chatbot.knowledge import retrieval

    if not retrieval.knowledge_base_active():
        return None
    return lambda query: retrieval.retrieve(query)


@dataclass(frozen=True)
class Checked:
    """The answer check's verdict: the text to show and store, and what the check did."""

    text: str
    outcome: str  # CHECK_* below
    handoff: bool = False  # unsupported: the conversation goes to a person (NOT_FOUND_REASON)


CHECK_NONE = ""  # not a statement about the store (small talk, a refusal, a handoff), or no check
CHECK_SUPPORTED = "supported"  # its words and every figure are the passage's (citation set to it)
CHECK_QUOTED = "quoted"  # its figures were not the passage's: the passage itself is the answer
CHECK_UNSUPPORTED = "unsupported"  # no passage given says it: "I couldn't find that" and a person


def support(answer_terms: set[str], passage: kb.Passage) -> float:
    """The share of the answer's terms that the passage (heading and text) holds."""
    if not answer_terms:
        return 0.0
    return len(answer_terms & set(kb.terms(f"{passage.heading} {passage.text}"))) / len(answer_terms)


def check_support(answer: str, passages: Sequence[kb.Passage], *, min_support: float) -> Checked:
    """Whether the passages given support what the answer says about the store.

    An answer is a statement about the store when it cites a passage or shares at least
    ``min_support`` of its terms with one. Such an answer must say what a passage given says:
    the passage that holds most of its terms must hold at least ``min_support`` of them and every
    figure it states (a run of digits), and it is cited (the citation is set to it when the model
    named another); when the figures differ (the article was edited, the model recalled the old
    ones) the passage's own text is the answer, cited; when no passage holds it the bot says it
    could not find it and hands over, instead of an answer its sources do not back."""
    body = kb.strip_citations(answer)
    cited = [int(n) for n in kb.CITATION.findall(answer or "")]
    terms = set(kb.terms(body))
    if not terms:
        return Checked(answer, CHECK_NONE)
    best, best_n = 0.0, 0
    for number, passage in enumerate(passages, 1):
        share = support(terms, passage)
        if share > best:
            best, best_n = share, number
    if not cited and best < min_support:
        return Checked(answer, CHECK_NONE)
    if best < min_support:
        return Checked(NOT_FOUND_TEXT, CHECK_UNSUPPORTED, handoff=True)
    passage = passages[best_n - 1]
    if set(_FIGURES.findall(body)) <= set(_FIGURES.findall(passage.text)):
        return Checked(answer if cited == [best_n] else f"{body} [{best_n}]", CHECK_SUPPORTED)
    return Checked(f"{passage.text} [{best_n}]", CHECK_QUOTED)
