"""The demo model's support corpus: loading it, and turning it into dialogues.

The corpus lives in ``data/`` as two JSON files (format 1):

``intents.json``
    ``{"format": 1, "store": {"name", "description", "system_prompt"}, "intents": [...]}``; each
    intent is ``{"id", "reasoning", "reply", "decorate", "weight", "train": [...],
    "heldout": [...]}``.
    ``reply`` is the intent's one canonical answer (distinct across intents and follow-ups),
    ``reasoning`` the short R1-style thought that precedes it inside ``<think>…</think>``.
    ``train`` phrasings are used for training; ``heldout`` phrasings never are (not even for the
    tokenizer), so they measure how well the model generalises to new wordings. ``decorate``:
    whether training may add greetings/thanks around the question (off for small talk, where
    "Hi" + "thanks" would change the intent). ``weight``: how often training picks the intent
    relative to others (default 1; off-topic questions are the most varied, so they get more).

``followups.json``
    ``{"format": 1, "followups": [...]}``; each is ``{"id", "context_intent", "reasoning",
    "reply", "train", "heldout"}``: a question that only makes sense after the assistant answered
    ``context_intent`` (e.g. "does it expire?" after the gift card answer). Several follow-ups
    share phrasings in different contexts, so the model must read the previous turn.

Everything random is driven by an explicit ``random.Random(seed)``, so a seed fixes the data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
CORPUS_FORMAT = 1

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


@dataclass(frozen=True)
class Followup:
    id: str
    context_intent: str
    reasoning: str
    reply: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    store_name: str
    system_prompt: str
    intents: tuple[Intent, ...]
    followups: tuple[Followup, ...]

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


@dataclass(frozen=True)
class TrainingDialogue:
    """A conversation ending with a user turn, and the assistant turn the model must produce."""

    intent_id: str
    messages: tuple[Message, ...]
    reasoning: str
    reply: str

    @property
    def completion(self) -> str:
        """What the model generates after the prompt's ``<think>\\n`` (end token excluded)."""
        return assistant_completion(reasoning=self.reasoning, reply=self.reply)


def assistant_completion(*, reasoning: str, reply: str) -> str:
    return f"{reasoning}\n</think>\n\n{reply}"


def load_corpus(*, data_dir: Path = DATA_DIR) -> Corpus:
    return _load_corpus_cached(Path(data_dir).resolve())


@cache
def _load_corpus_cached(data_dir: Path) -> Corpus:
    raw_intents = json.loads((data_dir / "intents.json").read_text(encoding="utf-8"))
    raw_followups = json.loads((data_dir / "followups.json").read_text(encoding="utf-8"))
    for name, raw in (("intents.json", raw_intents), ("followups.json", raw_followups)):
        if raw.get("format") != CORPUS_FORMAT:
            raise ValueError(f"{name}: unsupported corpus format {raw.get('format')!r}")
    intents = tuple(
        Intent(
            id=item["id"],
            reasoning=item["reasoning"],
            reply=item["reply"],
            decorate=bool(item.get("decorate", True)),
            train=tuple(item["train"]),
            heldout=tuple(item["heldout"]),
            weight=float(item.get("weight", 1.0)),
        )
        for item in raw_intents["intents"]
    )
    followups = tuple(
        Followup(
            id=item["id"],
            context_intent=item["context_intent"],
            reasoning=item["reasoning"],
            reply=item["reply"],
            train=tuple(item["train"]),
            heldout=tuple(item["heldout"]),
        )
        for item in raw_followups["followups"]
    )
    corpus = Corpus(
        store_name=raw_intents["store"]["name"],
        system_prompt=raw_intents["store"]["system_prompt"],
        intents=intents,
        followups=followups,
    )
    _validate(corpus)
    return corpus


def _validate(corpus: Corpus) -> None:
    """Fail loudly on corpus mistakes that would silently spoil training or evaluation."""
    replies = corpus.canonical_replies()
    if len(replies) != len(corpus.intents) + len(corpus.followups):
        raise ValueError("answer ids must be unique across intents and follow-ups")
    if len(set(replies.values())) != len(replies):
        raise ValueError("canonical replies must be distinct")
    intent_ids = {intent.id for intent in corpus.intents}
    seen_questions: dict[str, str] = {}
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
        texts.append(assistant_completion(reasoning=item.reasoning, reply=item.reply))
    texts.extend(p.strip() for p in _PREFIXES)
    texts.extend(s.strip() for s in _SUFFIXES)
    return texts


def training_dialogues(*, corpus: Corpus | None = None, count: int, seed: int) -> list[TrainingDialogue]:
    """``count`` augmented training conversations, fixed by ``seed``.

    Mix: ~80% single questions (a quarter of them after an unrelated earlier exchange, so the
    model learns to answer the *last* question), ~20% follow-ups after their context answer; a
    few carry the store's system prompt so a configured system prompt is not out of distribution.
    """
    corpus = corpus or load_corpus()
    rng = random.Random(seed)
    weights = [intent.weight for intent in corpus.intents]
    dialogues: list[TrainingDialogue] = []
    for _ in range(count):
        history: list[Message] = []
        if rng.random() < 0.15:
            history.append({"role": "system", "content": corpus.system_prompt})
        if corpus.followups and rng.random() < 0.2:
            followup = rng.choice(corpus.followups)
            if rng.random() < 0.15:
                history.extend(_exchange(rng.choice(corpus.intents), rng))
            history.extend(_exchange(corpus.intent(followup.context_intent), rng))
            question = _augment(rng.choice(followup.train), rng, decorate=False)
            history.append({"role": "user", "content": question})
            dialogues.append(
                TrainingDialogue(
                    intent_id=followup.id,
                    messages=tuple(history),
                    reasoning=followup.reasoning,
                    reply=followup.reply,
                )
            )
            continue
        intent = rng.choices(corpus.intents, weights=weights)[0]
        if rng.random() < 0.25:
            earlier = rng.choice([i for i in corpus.intents if i.id != intent.id])
            history.extend(_exchange(earlier, rng))
        question = _augment(rng.choice(intent.train), rng, decorate=intent.decorate)
        history.append({"role": "user", "content": question})
        dialogues.append(
            TrainingDialogue(
                intent_id=intent.id,
                messages=tuple(history),
                reasoning=intent.reasoning,
                reply=intent.reply,
            )
        )
    return dialogues


def _exchange(intent: Intent, rng: random.Random) -> list[Message]:
    question = _augment(rng.choice(intent.train), rng, decorate=intent.decorate)
    # History replies are stored sometimes with their reasoning, sometimes without: the chat
    # template strips it, and callers of the product may store either.
    content = intent.reply
    if rng.random() < 0.3:
        content = assistant_completion(reasoning=intent.reasoning, reply=intent.reply)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": content}]


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
