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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatbot.knowledge import text as kb

logger = logging.getLogger(__name__)

# Passages may take this share of the prompt budget; the rest is for the conversation.
PASSAGE_SHARE = 0.75

Search = Callable[[str], list[kb.Passage]]


@dataclass
class Grounding:
    """What one answer was given from the knowledge base."""

    query: str
    passages: list[kb.Passage] = field(default_factory=list)

    def snapshots(self, answer: str) -> list[dict[str, Any]]:
        """Message.passages: every passage given, as it was, and whether the answer cites it."""
        cited = set(kb.cited_numbers(answer, len(self.passages)))
        return [{**p.snapshot(n), "cited": n in cited} for n, p in enumerate(self.passages, 1)]


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


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
        max_tokens=int(budget_tokens * PASSAGE_SHARE),
        instruction=instruction,
    )
    turns[-1] = {"role": "user", "content": kb.grounded_content(question, passages, instruction=instruction)}
    return turns, Grounding(query=query, passages=passages)


def knowledge_search() -> Search | None:
    """The product's retrieval when the knowledge base has a published article, else None."""
    from chatbot.knowledge import retrieval

    if not retrieval.knowledge_base_active():
        return None
    return lambda query: retrieval.retrieve(query)
