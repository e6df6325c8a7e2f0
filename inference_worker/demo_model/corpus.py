"""The demo model's support corpus: loading it, and turning it into dialogues.

The corpus lives in ``data/`` as two JSON files (format 2), beside Northwind's help-center
articles (``chatbot/knowledge/demo_articles/``, what the demo imports into its knowledge base):
an answer about the store's policies is not written here but named by its ``source``, the
article section (``slug#anchor``) whose text *is* the answer, so the articles are the one source
of truth. Small talk, refusals and handoffs have their own ``reply``.

``intents.json``
    ``{"format": 2, "store": {"name", "description", "system_prompt"}, "intents": [...]}``; each
    intent is ``{"id", "reasoning", "reply" or "source", "decorate", "weight", "train": [...],
    "heldout": [...]}``.
    ``reply`` is the intent's one canonical answer (distinct across intents and follow-ups),
    ``reasoning`` the short R1-style thought that precedes it inside ``<think>…</think>``.
    ``train`` phrasings are used for training; ``heldout`` phrasings never are (not even for the
    tokenizer), so they measure how well the model generalises to new wordings. ``decorate``:
    whether training may add greetings/thanks around the question (off for small talk, where
    "Hi" + "thanks" would change the intent). ``weight``: how often training picks the intent
    relative to others (default 1; off-topic questions are the most varied, so they get more).

``followups.json``
    ``{"format": 2, "followups": [...]}``; each is ``{"id", "context_intent", "reasoning",
    "source", "train", "heldout"}``: a question that only makes sense after the assistant answered
    ``context_intent`` (e.g. "does it expire?" after the gift card answer). Several follow-ups
    share phrasings in different contexts, so the model must read the previous turn.

Everything random is driven by an explicit ``random.Random(seed)``, so a seed fixes the data.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from chatbot.knowledge import text as kb
from inference_worker.grounding import NOT_FOUND_REASON, NOT_FOUND_TEXT
from inference_worker.handoff import HANDOFF_CLOSE, HANDOFF_OPEN, REASONS

DATA_DIR = Path(__file__).resolve().parent / "data"
ARTICLES_DIR = Path(kb.__file__).resolve().parent / "demo_articles"
CORPUS_FORMAT = 2

# The answer when the help center has nothing on a question about the store: say so, never
# guess, and hand the conversation to a person.
NOT_FOUND_REPLY = NOT_FOUND_TEXT
NOT_FOUND_HANDOFF = NOT_FOUND_REASON

Message = dict[str, str]

# Surface noise added to training questions so the model keys on content words, not on exact
# strings; held-out phrasings are written independently of these lists.
_PREFIXES = (
    "Hi, ",
    "Hello, ",
    "Hey! ",
    "Good morning. ",
    "Quick question: ",
    "Excuse me, ",
    "Hi there. ",
    "Sorry to bother you, ",
    "Hello again, ",
    "Question: ",
)
_SUFFIXES = (" Thanks!", " Thank you.", " please", " Please help.", " thx", " asap", " :)", "??")
_FILLERS = ("really", "actually", "just", "please", "now", "still", "currently", "maybe", "also", "so")


@dataclass(frozen=True)
class Intent:
    id: str
    reasoning: str
    reply: str
    decorate: bool
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    weight: float = 1.0
    handoff: str = ""  # a reason code (inference_worker.handoff.REASONS): the answer hands off
    source: str = ""  # the help-center passage (slug#anchor) whose text is the reply


@dataclass(frozen=True)
class Followup:
    id: str
    context_intent: str
    reasoning: str
    reply: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    source: str = ""
    handoff: str = ""


@dataclass(frozen=True)
class Corpus:
    store_name: str
    system_prompt: str
    intents: tuple[Intent, ...]
    followups: tuple[Followup, ...]
    passages: tuple[kb.Passage, ...] = ()  # the demo help center's, in article order

    def passage(self, key: str) -> kb.Passage:
        for passage in self.passages:
            if passage.key == key:
                return passage
        raise KeyError(key)

    def item(self, answer_id: str) -> Intent | Followup:
        for item in (*self.intents, *self.followups):
            if item.id == answer_id:
                return item
        raise KeyError(answer_id)

    def intent(self, intent_id: str) -> Intent:
        for intent in self.intents:
            if intent.id == intent_id:
                return intent
        raise KeyError(intent_id)

    def canonical_replies(self) -> dict[str, str]:
        """Answer id (intent or follow-up) -> its canonical reply."""
        replies = {intent.id: intent.reply for intent in self.intents}
        replies.update({followup.id: followup.reply for followup in self.followups})
        return replies


@dataclass(frozen=True)
class HeldoutExample:
    """One evaluation question: the conversation so far (ending with the user) and what the
    answer must be."""

    intent_id: str
    messages: tuple[Message, ...]
    expected_reply: str
    handoff: str = ""


@dataclass(frozen=True)
class Turn:
    """One customer turn of a planned conversation and the answer it must get."""

    answer_id: str  # intent or follow-up id
    question: str
    reasoning: str
    reply: str
    handoff: str = ""
    source: str = ""  # the passage (slug#anchor) the answer comes from, for store questions


@dataclass(frozen=True)
class HeldoutConversation:
    """A held-out multi-turn conversation: customer turns in order, each with its expected answer."""

    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class TrainingDialogue:
    """A conversation ending with a user turn, and the assistant turn the model must produce."""

    intent_id: str
    messages: tuple[Message, ...]
    reasoning: str
    reply: str
    handoff: str = ""
    passages: tuple[kb.Passage, ...] | None = None  # None: no knowledge base (the prompt has none)

    @property
    def completion(self) -> str:
        """What the model generates after the prompt's ``<think>\\n`` (end token excluded)."""
        return assistant_completion(reasoning=self.reasoning, reply=self.reply, handoff=self.handoff)


def assistant_completion(*, reasoning: str, reply: str, handoff: str = "") -> str:
    """The assistant's whole turn after ``<think>\\n``; a handoff answer ends with the action
    block (inference_worker.handoff), which the worker strips from what it shows and stores."""
    text = f"{reasoning}\n</think>\n\n{reply}"
    if handoff:
        text += f"\n{HANDOFF_OPEN}{handoff}{HANDOFF_CLOSE}"
    return text


def load_corpus(*, data_dir: Path = DATA_DIR, articles_dir: Path = ARTICLES_DIR) -> Corpus:
    return _load_corpus_cached(Path(data_dir).resolve(), Path(articles_dir).resolve())


def _reply(item: dict, passages: dict[str, kb.Passage]) -> str:
    if "source" in item:
        if item["source"] not in passages:
            raise ValueError(f"{item['id']}: source {item['source']!r} is no section of the demo articles")
        return passages[item["source"]].text
    return item["reply"]


@cache
def _load_corpus_cached(data_dir: Path, articles_dir: Path) -> Corpus:
    passages = {p.key: p for p in kb.passages_from_folder(articles_dir)}
    raw_intents = json.loads((data_dir / "intents.json").read_text(encoding="utf-8"))
    raw_followups = json.loads((data_dir / "followups.json").read_text(encoding="utf-8"))
    for name, raw in (("intents.json", raw_intents), ("followups.json", raw_followups)):
        if raw.get("format") != CORPUS_FORMAT:
            raise ValueError(f"{name}: unsupported corpus format {raw.get('format')!r}")
    intents = tuple(
        Intent(
            id=item["id"],
            reasoning=item["reasoning"],
            reply=_reply(item, passages),
            decorate=bool(item.get("decorate", True)),
            train=tuple(item["train"]),
            heldout=tuple(item["heldout"]),
            weight=float(item.get("weight", 1.0)),
            handoff=item.get("handoff", ""),
            source=item.get("source", ""),
        )
        for item in raw_intents["intents"]
    )
    followups = tuple(
        Followup(
            id=item["id"],
            context_intent=item["context_intent"],
            reasoning=item["reasoning"],
            reply=_reply(item, passages),
            train=tuple(item["train"]),
            heldout=tuple(item["heldout"]),
            source=item.get("source", ""),
        )
        for item in raw_followups["followups"]
    )
    corpus = Corpus(
        store_name=raw_intents["store"]["name"],
        system_prompt=raw_intents["store"]["system_prompt"],
        intents=intents,
        followups=followups,
        passages=tuple(passages.values()),
    )
    _validate(corpus)
    return corpus


def _validate(corpus: Corpus) -> None:
    """Fail loudly on corpus mistakes that would silently spoil training or evaluation."""
    replies = corpus.canonical_replies()
    if len(replies) != len(corpus.intents) + len(corpus.followups):
        raise ValueError("answer ids must be unique across intents and follow-ups")
    sources = {item.id: item.source for item in (*corpus.intents, *corpus.followups)}
    by_reply: dict[str, str] = {}
    for answer_id, reply in replies.items():
        other = by_reply.setdefault(reply, answer_id)
        if other != answer_id and not (sources[answer_id] and sources[answer_id] == sources[other]):
            raise ValueError(f"canonical replies must be distinct: {other} and {answer_id}")
    intent_ids = {intent.id for intent in corpus.intents}
    seen_questions: dict[str, str] = {}
    for intent in corpus.intents:
        if intent.handoff and intent.handoff not in REASONS:
            raise ValueError(f"{intent.id}: unknown handoff reason {intent.handoff!r}")
    for item in (*corpus.intents, *corpus.followups):
        if not item.train or not item.heldout:
            raise ValueError(f"{item.id}: needs training and held-out phrasings")
        if "<think>" in item.reply or "</think>" in item.reply:
            raise ValueError(f"{item.id}: reply must not contain think tags")
        train_keys = {_normalize(q) for q in item.train}
        for question in item.heldout:
            if _normalize(question) in train_keys:
                raise ValueError(f"{item.id}: held-out phrasing also in training: {question!r}")
        if isinstance(item, Followup):
            if item.context_intent not in intent_ids:
                raise ValueError(f"{item.id}: unknown context intent {item.context_intent!r}")
            continue  # follow-up phrasings repeat across contexts on purpose
        for question in (*item.train, *item.heldout):
            owner = seen_questions.setdefault(_normalize(question), item.id)
            if owner != item.id:
                raise ValueError(f"question {question!r} in both {owner} and {item.id}")


def _normalize(text: str) -> str:
    # Training drops final punctuation and lowercases, so compare without them.
    return " ".join(text.lower().split()).rstrip("?!. ")


def heldout_examples(*, corpus: Corpus | None = None) -> list[HeldoutExample]:
    """Every held-out question, in corpus order: single questions, then follow-ups.

    A follow-up's context turn uses the context intent's first *held-out* phrasing, so no part of
    an evaluation conversation was seen in training except the canonical reply itself.
    """
    corpus = corpus or load_corpus()
    examples = [
        HeldoutExample(
            intent_id=intent.id,
            messages=({"role": "user", "content": question},),
            expected_reply=intent.reply,
            handoff=intent.handoff,
        )
        for intent in corpus.intents
        for question in intent.heldout
    ]
    for followup in corpus.followups:
        context = corpus.intent(followup.context_intent)
        for question in followup.heldout:
            examples.append(
                HeldoutExample(
                    intent_id=followup.id,
                    messages=(
                        {"role": "user", "content": context.heldout[0]},
                        {"role": "assistant", "content": context.reply},
                        {"role": "user", "content": question},
                    ),
                    expected_reply=followup.reply,
                )
            )
    return examples


def tokenizer_training_texts(*, corpus: Corpus | None = None) -> list[str]:
    """Texts the BPE is trained on: training-side text only, never held-out phrasings."""
    corpus = corpus or load_corpus()
    texts: list[str] = [corpus.store_name, corpus.system_prompt]
    for item in (*corpus.intents, *corpus.followups):
        texts.extend(item.train)
        handoff = item.handoff if isinstance(item, Intent) else ""
        texts.append(assistant_completion(reasoning=item.reasoning, reply=item.reply, handoff=handoff))
    texts.extend(p.strip() for p in _PREFIXES)
    texts.extend(s.strip() for s in _SUFFIXES)
    # The help center as the model reads it, and what it says when the help center has nothing.
    texts.extend(kb.passage_line(n, p) for n, p in enumerate(corpus.passages, 1))
    texts.extend(kb.grounded_content("Question", corpus.passages[:3]) for _ in range(3))
    texts.append(kb.grounded_content("Question", []))
    texts.append(f"{PASSAGE_ANSWERS.format(number=1)} {NO_PASSAGE_ANSWERS} {NOT_FOUND_REPLY} [1] [2] [3]")
    texts.append(f"{HANDOFF_OPEN}{NOT_FOUND_HANDOFF}{HANDOFF_CLOSE}")
    return texts


# How many customer turns a training conversation has (1 to 10): every assistant turn in it is
# trained (train.py labels the history's answers too), so the short ones keep turn 1 strong.
TRAIN_TURN_WEIGHTS = (4, 2, 2, 1.5, 1.5, 1, 1, 1, 1, 1)
HELDOUT_CONVERSATIONS = 160
HELDOUT_SEED = 2026


def plan_turns(
    corpus: Corpus,
    rng: random.Random,
    *,
    turns: int,
    heldout: bool = False,
    augment: bool = True,
    deck: list[tuple[Intent, str]] | None = None,
) -> list[Turn]:
    """A conversation of ``turns`` customer turns, as real ones go: topic changes, a follow-up
    whose context answer may be a few turns back (small talk in between), thanks in the middle,
    the same question asked again; a greeting may open it, goodbye and the handoff intents (the
    conversation then belongs to a person) only end it. Phrasings come from ``train`` or, with
    ``heldout``, from ``heldout`` only (unaugmented: they are the test).

    ``deck`` (evaluation): new topics are dealt from it, a shuffled pack of every (intent,
    phrasing) pair refilled when empty, and no question is asked again, so every held-out
    wording is tested about as often as any other and at every position alike; a hard wording
    then weighs the same on turn 1 as on turn 9."""
    intents = [i for i in corpus.intents if i.id not in _SMALL_TALK]
    weights = [i.weight for i in intents]
    followups_by_context: dict[str, list[Followup]] = {}
    for followup in corpus.followups:
        followups_by_context.setdefault(followup.context_intent, []).append(followup)
    small = {i.id: i for i in corpus.intents if i.id in _SMALL_TALK}
    plan: list[Turn] = []
    topic: Intent | None = None  # the latest substantive answer, what a follow-up refers to
    asked: list[Intent] = []
    for position in range(turns):
        last = position == turns - 1
        roll = rng.random()
        item: Intent | Followup
        dealt: str | None = None
        if position == 0 and roll < 0.15 and "greeting" in small:
            item = small["greeting"]
        elif position > 0 and last and roll < 0.08 and "goodbye" in small:
            item = small["goodbye"]
        elif position > 0 and roll < 0.12 and "thanks" in small and plan[-1].answer_id != "thanks":
            item = small["thanks"]
        elif topic is not None and topic.id in followups_by_context and roll < 0.35:
            item = rng.choice(followups_by_context[topic.id])
        elif asked and roll < 0.42 and deck is None:
            item = rng.choice(asked)
        elif deck is not None:
            item, dealt = _deal(deck, rng, intents, last=last, topic=topic)
        else:
            while True:
                item = rng.choices(intents, weights=weights)[0]
                if (not item.handoff or last) and (topic is None or item.id != topic.id):
                    break
        if isinstance(item, Intent) and item.id not in _SMALL_TALK:
            topic = item
            if not item.handoff:
                asked.append(item)
        if isinstance(item, Followup):
            topic = None  # a follow-up's own answer has no follow-ups
        phrasings = item.heldout if heldout else item.train
        question = dealt or rng.choice(phrasings)
        if augment and not heldout:
            question = _augment(question, rng, decorate=isinstance(item, Intent) and item.decorate)
        plan.append(
            Turn(
                answer_id=item.id,
                question=question,
                reasoning=item.reasoning,
                reply=item.reply,
                handoff=item.handoff,
                source=item.source,
            )
        )
    return plan


_SMALL_TALK = ("greeting", "thanks", "goodbye")


def _deal(
    deck: list[tuple[Intent, str]], rng: random.Random, intents: list[Intent], *, last: bool, topic: Intent | None
) -> tuple[Intent, str]:
    """The next (intent, held-out phrasing) from the deck that fits here (a handoff intent only
    last, not the topic just answered); cards that do not fit go to the bottom."""
    for _ in range(2):
        if not deck:
            deck.extend((intent, phrasing) for intent in intents for phrasing in intent.heldout)
            rng.shuffle(deck)
        for _ in range(len(deck)):
            intent, phrasing = deck.pop(0)
            if (not intent.handoff or last) and (topic is None or intent.id != topic.id):
                return intent, phrasing
            deck.append((intent, phrasing))
        deck.clear()
    raise ValueError("no held-out question fits this turn")


def conversation_messages(turns: Sequence[Turn], *, system_prompt: str = "") -> list[Message]:
    """The messages the worker would build before the last turn's answer: every earlier turn
    with its answer as stored (the reply only; a handoff block is never stored), then the last
    customer message."""
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in turns[:-1]:
        messages.append({"role": "user", "content": turn.question})
        messages.append({"role": "assistant", "content": turn.reply})
    messages.append({"role": "user", "content": turns[-1].question})
    return messages


# Of the training conversations, the share whose last turn reads the help center's passages (the
# rest have no knowledge base, as a deployment without articles: the model answers from memory).
GROUNDED_SHARE = 0.5
# Retrieval as the product's defaults (KNOWLEDGE_MAX_PASSAGES, KNOWLEDGE_MIN_RELEVANCE).
PASSAGE_LIMIT = kb.DEFAULT_MAX_PASSAGES
MIN_RELEVANCE = kb.DEFAULT_MIN_RELEVANCE

_DIGITS = re.compile(r"\d+")


def perturb_figures(text: str, rng: random.Random) -> str:
    """``text`` with every run of digits replaced by another number, usually of the same length
    (evaluation's edited help center)."""

    def new(match: re.Match) -> str:
        length = len(match.group(0))
        roll = rng.random()
        if roll < 0.15:
            length += 1
        elif roll < 0.3 and length > 1:
            length -= 1
        if length == 1:
            return str(rng.randrange(10))
        return str(rng.randrange(1, 10)) + "".join(str(rng.randrange(10)) for _ in range(length - 1))

    return _DIGITS.sub(new, text)


# How a grounded answer's reasoning names the passage it copies, or says none answers
# (``grounded_answer``); ``named_passage`` reads the number back.
PASSAGE_ANSWERS = "Passage {number} answers it."
NO_PASSAGE_ANSWERS = "No passage answers it."
_NAMED = re.compile(re.escape(PASSAGE_ANSWERS).replace(re.escape("{number}"), r"(\d+)"))


def named_passage(reasoning: str) -> int | None:
    """The passage number a reasoning says answers (``PASSAGE_ANSWERS``), or None."""
    found = _NAMED.search(reasoning or "")
    return int(found.group(1)) if found else None


def _first_sentence(reasoning: str) -> str:
    head, dot, _ = reasoning.partition(". ")
    return head + ("." if dot else "")


def grounded_answer(turn: Turn, passages: Sequence[kb.Passage]) -> tuple[str, str, str]:
    """(reasoning, reply, handoff) for ``turn`` when the model reads ``passages``: a store question
    answered by copying its passage and citing its number, or, when its passage is not among them,
    "I couldn't find that" and a handoff; small talk, refusals and handoffs as without passages.
    The reasoning names the passage but none of its figures (they are the passage's to say)."""
    if not turn.source:
        return turn.reasoning, turn.reply, turn.handoff
    thought = _first_sentence(turn.reasoning)
    for number, passage in enumerate(passages, 1):
        if passage.key == turn.source:
            return f"{thought} {PASSAGE_ANSWERS.format(number=number)}", f"{passage.text} [{number}]", ""
    return f"{thought} {NO_PASSAGE_ANSWERS}", NOT_FOUND_REPLY, NOT_FOUND_HANDOFF


def search_passages(index: kb.MemoryIndex, plan: Sequence[Turn], *, limit: int = PASSAGE_LIMIT) -> list[kb.Passage]:
    """What the worker's retrieval finds for the conversation's last turn (same query, terms,
    relevance and cut-off)."""
    query = kb.query_text([turn.question for turn in plan])
    return index.search(query, limit=limit, min_relevance=MIN_RELEVANCE)


def grounded_dialogue(
    plan: Sequence[Turn], passages: Sequence[kb.Passage], *, system_prompt: str = ""
) -> TrainingDialogue:
    reasoning, reply, handoff = grounded_answer(plan[-1], passages)
    messages = conversation_messages(plan, system_prompt=system_prompt)
    messages[-1] = {"role": "user", "content": kb.grounded_content(plan[-1].question, passages)}
    return TrainingDialogue(
        intent_id=plan[-1].answer_id,
        messages=tuple(messages),
        reasoning=reasoning,
        reply=reply,
        handoff=handoff,
        passages=tuple(passages),
    )


def training_dialogues(
    *, corpus: Corpus | None = None, count: int, seed: int, changed_figures_share: float = 0.0
) -> list[TrainingDialogue]:
    """``count`` augmented training conversations of 1 to 10 turns (TRAIN_TURN_WEIGHTS), fixed by
    ``seed``; each ends with the customer turn whose answer is the completion. A few carry the
    store's system prompt so a configured system prompt is not out of distribution. Most read the
    help center's passages for their last turn (GROUNDED_SHARE), found by the product's own
    retrieval over the demo articles (in random order in 30%; in ``changed_figures_share`` of them
    with every figure changed at random, which the answer, copied from its passage, then says: a
    figure that only the prompt holds, as after an article was edited); where it missed the right passage
    for a wording (a typo, a dropped word), the answer is "not found" and the handoff, as the
    product would say it; the history is plain, as the worker stores it."""
    corpus = corpus or load_corpus()
    index = kb.MemoryIndex(corpus.passages)
    rng = random.Random(seed)
    dialogues: list[TrainingDialogue] = []
    for _ in range(count):
        turns = rng.choices(range(1, len(TRAIN_TURN_WEIGHTS) + 1), weights=TRAIN_TURN_WEIGHTS)[0]
        plan = plan_turns(corpus, rng, turns=turns)
        system = corpus.system_prompt if rng.random() < 0.15 else ""
        last = plan[-1]
        if rng.random() < GROUNDED_SHARE:
            passages = search_passages(index, plan)
            if len(passages) > 1 and rng.random() < 0.3:
                rng.shuffle(passages)
            if changed_figures_share and rng.random() < changed_figures_share:
                passages = [replace(p, text=perturb_figures(p.text, rng)) for p in passages]
            dialogues.append(grounded_dialogue(plan, passages, system_prompt=system))
            continue
        dialogues.append(
            TrainingDialogue(
                intent_id=last.answer_id,
                messages=tuple(conversation_messages(plan, system_prompt=system)),
                reasoning=last.reasoning,
                reply=last.reply,
                handoff=last.handoff,
            )
        )
    return dialogues


def heldout_conversations(
    *, corpus: Corpus | None = None, count: int = HELDOUT_CONVERSATIONS, seed: int = HELDOUT_SEED
) -> list[HeldoutConversation]:
    """``count`` evaluation conversations of 1 to 10 turns (evenly spread), made of held-out
    phrasings only, dealt evenly (``plan_turns``' deck), fixed by ``seed``."""
    corpus = corpus or load_corpus()
    rng = random.Random(seed)
    deck: list[tuple[Intent, str]] = []
    conversations = []
    for index in range(count):
        turns = 1 + index % 10
        plan = plan_turns(corpus, rng, turns=turns, heldout=True, deck=deck)
        conversations.append(HeldoutConversation(turns=tuple(plan)))
    return conversations


def _augment(question: str, rng: random.Random, *, decorate: bool) -> str:
    text = question
    if rng.random() < 0.2 and text[-1:] in "?!.":
        text = text[:-1]
    if rng.random() < 0.1:
        text = _typo(text, rng)
    # Dropping or inserting a word makes the model rely on several content words at once,
    # which is what carries over to phrasings it has never seen.
    words = text.split(" ")
    if len(words) >= 4 and rng.random() < 0.25:
        del words[rng.randrange(len(words))]
    if len(words) >= 3 and rng.random() < 0.15:
        words.insert(rng.randrange(1, len(words)), rng.choice(_FILLERS))
    text = " ".join(words)
    if decorate and rng.random() < 0.3:
        prefix = rng.choice(_PREFIXES)
        text = prefix + (text[0].lower() + text[1:] if prefix.endswith(", ") else text)
    if decorate and rng.random() < 0.2:
        text = text + rng.choice(_SUFFIXES)
    if rng.random() < 0.2:
        text = text.lower()
    return text


def _typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters inside one longer word: customers type fast."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 5 and word.isalpha()]
    if not candidates:
        return text
    index = rng.choice(candidates)
    word = words[index]
    pos = rng.randrange(1, len(word) - 2)
    words[index] = word[:pos] + word[pos + 1] + word[pos] + word[pos + 2 :]
    return " ".join(words)


def calibration_texts(
    *,
    corpus: Corpus | None = None,
    count: int,
    seed: int,
    render: Callable[[Sequence[Message]], str],
    end_token: str,
) -> list[str]:
    """Full chat-formatted conversations (prompt + reasoning + reply + end token) for GPTQ.

    ``render`` turns messages into the prompt string (the tokenizer's chat template with the
    generation prompt), so the calibration activations are those the served model sees.
    A seed different from training's keeps them from being the exact training batch.
    """
    dialogues = training_dialogues(corpus=corpus, count=count, seed=seed + 7919)
    return [render(d.messages) + d.completion + end_token for d in dialogues]
