"""Evaluating answers grounded in the help center, for each variant (part of ``evaluate_models``).

Every prompt is built as the worker builds it: the passages the product's retrieval finds for
the customer's messages (``chatbot.knowledge.text``: same terms, relevance, cut-off and passage
count as KNOWLEDGE_MIN_RELEVANCE / KNOWLEDGE_MAX_PASSAGES' defaults, over the demo articles in an
in-memory index), fitted to the prompt budget (``inference_worker.grounding``), in the last user
turn; greedy decoding. Four sets, all from held-out phrasings (never trained on):

* **grounded**: every held-out store question (and follow-up, after its context turn). The
  expected answer is the right passage's text with its citation ``[n]`` when retrieval found it,
  else "I couldn't find that" with the handoff. ``accuracy``: the exact expected answer;
  ``retrieval_recall``: how often the right passage was among those given.
* **edited**: the same questions over articles whose figures were changed after training (every
  run of digits in every passage replaced by another number, seeded). ``follows_article``: of the
  answers whose passage was found, those that cite it and state every figure of the edited text
  (goal: at least 90%); ``stale``: those that state a figure of the original text it replaced;
  ``outcomes``: what each of those answers did (``edited_outcome``: followed, a figure wrong, the
  right text with another passage's number, a copy that went astray, another passage, "not
  found", another intent's reply), which tells reading failures from picking failures;
  ``reasoning_names_passage``: the model's reasoning names the right passage's number;
  ``follows_given_reasoning``: the answers that follow the article when the model writes its
  reply after the expected reasoning (teacher-forced up to ``</think>``): how well it reads once
  the passage is picked (the reader's failures are mostly in the reasoning: docs/demo-model.md).
* **no_answer**: the same questions with the right passage taken out of the knowledge base
  (nothing relevant for them). The bot must say it does not know (the not_in_help_center
  handoff) instead of answering from a passage about something else; precision and recall of
  "does not know" over this set and the grounded set together.
* **sources**: of the grounded answers that answered (not "does not know"), those whose cited
  passage is the right one, and whose article is the right one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from chatbot.knowledge import text as kb
from inference_worker.demo_model.corpus import (
    NOT_FOUND_HANDOFF,
    PASSAGE_LIMIT,
    Corpus,
    HeldoutExample,
    Turn,
    assistant_completion,
    grounded_answer,
    load_corpus,
    named_passage,
    perturb_figures,
)
from inference_worker.demo_model.evaluate import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    HandoffCounts,
    LoadedPair,
    generate_greedy,
    normalize_reply,
    parse_answer,
)
from inference_worker.demo_model.tokenizer import THINK_END
from inference_worker.grounding import check_support, ground_turns, prompt_tokens
from inference_worker.prompting import build_prompt_ids

EDIT_SEED = 45
EDITED_MIN_FOLLOWS = 0.90  # the goal: answers follow the edited article
_MISSES = 12
_FIGURES = re.compile(r"\d+")


def store_examples(heldout: Sequence[HeldoutExample], corpus: Corpus) -> list[tuple[HeldoutExample, Turn]]:
    """The held-out examples about the store (those whose answer is a passage), each with its
    expected turn."""
    found = []
    for example in heldout:
        item = corpus.item(example.intent_id)
        if not item.source:
            continue
        found.append(
            (
                example,
                Turn(
                    answer_id=item.id,
                    question=example.messages[-1]["content"],
                    reasoning=item.reasoning,
                    reply=item.reply,
                    source=item.source,
                ),
            )
        )
    return found


def edited_passages(passages: Sequence[kb.Passage], *, seed: int = EDIT_SEED) -> list[kb.Passage]:
    """The help center with every figure changed: each passage with digits gets new ones (never
    its old text)."""
    rng = random.Random(seed)
    edited = []
    for passage in passages:
        text = passage.text
        if _FIGURES.search(text):
            for _ in range(20):
                text = perturb_figures(passage.text, rng)
                if text != passage.text:
                    break
        edited.append(replace(passage, text=text))
    return edited


def _prompt(
    pair: LoadedPair, example: HeldoutExample, passages: list[kb.Passage], budget_tokens: int
) -> tuple[list[int], list[kb.Passage]]:
    turns = [dict(m) for m in example.messages]
    turns, grounding = ground_turns(
        turns=turns,
        tokenizer=pair.tokenizer,
        budget_tokens=budget_tokens,
        instruction=kb.DEFAULT_INSTRUCTION,
        search=lambda query: passages,
    )
    budget = prompt_tokens(budget_tokens, grounding.extra_tokens)
    return build_prompt_ids(tokenizer=pair.tokenizer, turns=turns, budget_tokens=budget), grounding.passages


def _run(
    pair: LoadedPair,
    cases: list[tuple[HeldoutExample, Turn]],
    index: kb.MemoryIndex,
    *,
    budget_tokens: int,
    leave_out: bool,
    max_new_tokens: int,
    batch_size: int,
):
    prompts, given = [], []
    for example, turn in cases:
        query = kb.query_text([m["content"] for m in example.messages if m["role"] == "user"])
        found = index.search(
            query,
            limit=PASSAGE_LIMIT,
            min_relevance=kb.DEFAULT_MIN_RELEVANCE,
            exclude=(turn.source,) if leave_out else (),
        )
        ids, passages = _prompt(pair, example, found, budget_tokens)
        prompts.append(ids)
        given.append(passages)
    outputs, _ = generate_greedy(pair=pair, prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [parse_answer(tokenizer=pair.tokenizer, token_ids=o) for o in outputs], given, prompts


def reasoning_given(tokenizer, prompt: Sequence[int], turn: Turn, passages: Sequence[kb.Passage]) -> list[int]:
    """``prompt`` followed by the expected reasoning up to and including ``</think>``, tokenized
    as in training (the whole completion at once, cut after ``</think>``): the model writes the
    reply after a reasoning that picked the right passage."""
    reasoning, reply, handoff = grounded_answer(turn, passages)
    whole = tokenizer(assistant_completion(reasoning=reasoning, reply=reply, handoff=handoff), add_special_tokens=False)
    ids = whole["input_ids"]
    return [*prompt, *ids[: ids.index(tokenizer.convert_tokens_to_ids(THINK_END)) + 1]]


def _not_found(answer) -> bool:
    return answer.handoff == NOT_FOUND_HANDOFF


# What an answer on the edited set did, when its passage was given (``edited_outcome``).
EDITED_OUTCOMES = (
    "follows",  # the edited passage's words and figures, citing its number
    "wrong_number",  # its words and figures, citing another passage's number
    "figure_wrong",  # its words, but not its figures
    "copy_broke",  # began on its words and went astray (neither its text nor another passage's)
    "another_passage",  # the text of a passage other than the right one
    "not_found",  # "I couldn't find that" (the not_in_help_center handoff)
    "another_reply",  # a reply that cites nothing: another intent's (small talk, out of scope, ...)
)


def _words(text: str) -> str:
    """A reply's words without its figures and citations, normalised."""
    return normalize_reply(_FIGURES.sub("#", kb.strip_citations(text)))


def _follows(reply: str, passages: Sequence[kb.Passage], number: int) -> bool:
    """The reply cites ``passages[number - 1]`` and states exactly its figures: what
    ``follows_article`` counts (the model's answer and the checked one alike)."""
    return number in kb.cited_numbers(reply, len(passages)) and sorted(
        _FIGURES.findall(kb.strip_citations(reply))
    ) == sorted(_FIGURES.findall(passages[number - 1].text))


def edited_outcome(
    *, reply: str, not_found: bool, passages: Sequence[kb.Passage], number: int, known: Sequence[str] = ()
) -> str:
    """Which of EDITED_OUTCOMES an answer is, where ``passages[number - 1]`` is the right one and
    ``known`` the texts of every other passage the model may have learned (the whole help
    center): tells a model that cannot read figures from one that did not pick the passage.
    "follows" is exactly ``follows_article``'s test."""
    text = passages[number - 1].text
    if not_found:
        return "not_found"
    if _follows(reply, passages, number):
        return "follows"
    if _words(reply) == _words(text):
        same_figures = sorted(_FIGURES.findall(kb.strip_citations(reply))) == sorted(_FIGURES.findall(text))
        return "wrong_number" if same_figures else "figure_wrong"
    others = {_words(p.text) for i, p in enumerate(passages, 1) if i != number} | {_words(t) for t in known}
    others.discard(_words(text))
    if _words(reply) in others:
        return "another_passage"
    if not kb.cited_numbers(reply, len(passages)):
        return "another_reply"
    return "copy_broke"


CHECK_MIN_SUPPORT = 0.6  # KNOWLEDGE_MIN_SUPPORT's default


@dataclass(frozen=True)
class Final:
    """An answer as the worker stores it after the answer check (grounding.check_support)."""

    reply: str
    handoff: str | None


def _checked(answer, passages) -> Final:
    if not answer.reply:
        return Final(answer.reply, answer.handoff)
    checked = check_support(answer.reply, passages, min_support=CHECK_MIN_SUPPORT)
    handoff = answer.handoff or (NOT_FOUND_HANDOFF if checked.handoff else None)
    return Final(checked.text, handoff)


def evaluate_grounding(
    *,
    pair: LoadedPair,
    heldout: Sequence[HeldoutExample],
    budget_tokens: int,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, object]:
    corpus = load_corpus()
    cases = store_examples(heldout, corpus)
    index = kb.MemoryIndex(corpus.passages)
    run = {"budget_tokens": budget_tokens, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    misses: list[dict[str, object]] = []
    declines = HandoffCounts()

    # Grounded, and sources.
    answers, given, _ = _run(pair, cases, index, leave_out=False, **run)
    correct = checked_correct = found = answered = right_passage = right_article = 0
    checked_declines = HandoffCounts()
    for (_example, turn), answer, passages in zip(cases, answers, given, strict=True):
        keys = [p.key for p in passages]
        found += turn.source in keys
        _, reply, handoff = grounded_answer(turn, passages)
        ok = normalize_reply(answer.reply) == normalize_reply(reply) and (answer.handoff or "") == handoff
        correct += ok
        final = _checked(answer, passages)
        checked_correct += normalize_reply(final.reply) == normalize_reply(reply) and (final.handoff or "") == handoff
        checked_declines.add(expected=turn.source not in keys, predicted=final.handoff == NOT_FOUND_HANDOFF)
        declines.add(expected=turn.source not in keys, predicted=_not_found(answer))
        if not _not_found(answer):
            answered += 1
            cited = kb.cited_numbers(answer.reply, len(passages))
            if cited and keys[cited[0] - 1] == turn.source:
                right_passage += 1
            if cited and passages[cited[0] - 1].article_slug == turn.source.split("#")[0]:
                right_article += 1
        if not ok and len(misses) < _MISSES:
            misses.append(
                {"set": "grounded", "expected": turn.answer_id, "question": turn.question, "reply": answer.reply[:160]}
            )
    grounded = {
        "examples": len(cases),
        "correct": correct,
        "accuracy": correct / max(1, len(cases)),
        "accuracy_checked": checked_correct / max(1, len(cases)),
        "retrieval_recall": found / max(1, len(cases)),
    }
    sources = {
        "answered": answered,
        "right_passage": right_passage / max(1, answered),
        "right_article": right_article / max(1, answered),
    }

    # Edited facts.
    edited_corpus = edited_passages(corpus.passages)
    edited_index = kb.MemoryIndex(edited_corpus)
    originals = {p.key: p.text for p in corpus.passages}
    with_figures = [(e, t) for e, t in cases if _FIGURES.search(originals[t.source])]
    answers, given, prompts = _run(pair, with_figures, edited_index, leave_out=False, **run)
    follows = stale = counted = follows_checked = named_right = 0
    forced: list[tuple[list[int], int, list[kb.Passage], int]] = []
    outcomes = dict.fromkeys(EDITED_OUTCOMES, 0)
    known = list(originals.values())
    for (_example, turn), answer, passages, prompt in zip(with_figures, answers, given, prompts, strict=True):
        keys = [p.key for p in passages]
        if turn.source not in keys:
            continue
        counted += 1
        number = keys.index(turn.source) + 1
        outcome = edited_outcome(
            reply=answer.reply, not_found=_not_found(answer), passages=passages, number=number, known=known
        )
        outcomes[outcome] += 1
        named_right += named_passage(answer.reasoning) == number
        forced.append((reasoning_given(pair.tokenizer, prompt, turn, passages), len(prompt), passages, number))
        ok = outcome == "follows"
        follows += ok
        new_text = passages[number - 1].text
        old_figures = set(_FIGURES.findall(originals[turn.source])) - set(_FIGURES.findall(new_text))
        stale += any(f in old_figures for f in _FIGURES.findall(kb.strip_citations(answer.reply)))
        follows_checked += _follows(_checked(answer, passages).reply, passages, number)
        if not ok and len(misses) < 2 * _MISSES:
            misses.append(
                {"set": "edited", "expected": new_text[:120], "question": turn.question, "reply": answer.reply[:160]}
            )
    # The same questions with the expected reasoning given (it names the right passage): how well
    # the model reads once the passage is picked, apart from how well it picks.
    outputs: list[list[int]] = []
    if forced:
        outputs, _ = generate_greedy(
            pair=pair,
            prompts=[ids for ids, *_ in forced],
            max_new_tokens=run["max_new_tokens"],
            batch_size=run["batch_size"],
        )
    follows_given_reasoning = sum(
        _follows(parse_answer(tokenizer=pair.tokenizer, token_ids=[*ids[start:], *output]).reply, passages, number)
        for (ids, start, passages, number), output in zip(forced, outputs, strict=True)
    )
    edited = {
        "examples": len(with_figures),
        "passage_found": counted,
        "follows_article": follows / max(1, counted),
        "follows_article_checked": follows_checked / max(1, counted),
        "stale": stale / max(1, counted),
        "outcomes": outcomes,
        "reasoning_names_passage": named_right / max(1, counted),
        "follows_given_reasoning": follows_given_reasoning / max(1, counted),
    }

    # Nothing relevant: the right passage is not in the knowledge base.
    answers, given, _ = _run(pair, cases, index, leave_out=True, **run)
    said_unknown = said_unknown_checked = 0
    for (_example, turn), answer, passages in zip(cases, answers, given, strict=True):
        declines.add(expected=True, predicted=_not_found(answer))
        said_unknown += _not_found(answer)
        final = _checked(answer, passages)
        checked_declines.add(expected=True, predicted=final.handoff == NOT_FOUND_HANDOFF)
        said_unknown_checked += final.handoff == NOT_FOUND_HANDOFF
        if not _not_found(answer) and len(misses) < 3 * _MISSES:
            misses.append(
                {"set": "no_answer", "expected": "not found", "question": turn.question, "reply": answer.reply[:160]}
            )
    no_answer = {
        "examples": len(cases),
        "said_unknown": said_unknown / max(1, len(cases)),
        **declines.to_dict(),
        "said_unknown_checked": said_unknown_checked / max(1, len(cases)),
        "checked": checked_declines.to_dict(),
    }
    return {"grounded": grounded, "edited": edited, "no_answer": no_answer, "sources": sources, "misses": misses}


def grounding_failures(results: dict[str, dict[str, object]]) -> list[str]:
    """The goal on what customers get: answers (after the answer check) that follow the edited
    article. The model's own figure (without the check) is reported beside it."""
    failures = []
    for variant, report in results.items():
        follows = report["edited"]["follows_article_checked"]
        if follows < EDITED_MIN_FOLLOWS:
            failures.append(f"{variant} edited facts: {follows:.3f} follow the article < {EDITED_MIN_FOLLOWS}")
    return failures
