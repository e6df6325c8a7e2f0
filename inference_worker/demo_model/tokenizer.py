"""The demo model's tokenizer: a byte-level BPE trained on the support corpus, wrapped as the
``Qwen2Tokenizer`` that ``AutoTokenizer`` returns for a Qwen2 model, with DeepSeek-R1-Distill's
special tokens and chat template.

Why it is built through ``Qwen2Tokenizer`` itself: on reload, transformers 5.x rebuilds a Qwen2
tokenizer from vocab + merges with its own normalizer (NFC) and pre-tokenizer (Qwen2's split
regex + ByteLevel without regex), whatever ``tokenizer.json`` says. Training with exactly that
pipeline and wrapping through the same class makes the saved tokenizer and the reloaded one the
same object, so token ids survive ``save_pretrained`` + ``AutoTokenizer.from_pretrained``.

``<handoff>``/``</handoff>`` (the model's handoff action) are added the same way.

``<|endoftext|>`` is in the vocabulary because ``Qwen2Tokenizer`` uses it as ``unk_token`` and
would otherwise append it one past the embedding. ``<think>``/``</think>`` are ordinary (not
special) added tokens, as in R1-Distill, so ``decode(skip_special_tokens=True)`` keeps them and
callers can split reasoning from reply.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerBase
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

from inference_worker.handoff import HANDOFF_CLOSE, HANDOFF_OPEN

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
USER_TOKEN = "<｜User｜>"
ASSISTANT_TOKEN = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
ENDOFTEXT_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<｜▁pad▁｜>"

# Order fixes their ids (0..7), so every build puts them at the same place in the embedding.
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    USER_TOKEN,
    ASSISTANT_TOKEN,
    THINK_START,
    THINK_END,
    PAD_TOKEN,
)

# The demo model's context window: the worker fits a prompt into it with room for the answer
# (generation.prompt_budget), so a long conversation keeps its latest turns; the model is trained
# on histories trimmed the same way. Real checkpoints say their own (R1-Distill: 16,384 and more).
MODEL_MAX_LENGTH = 640

# DeepSeek-R1-Distill's template, reduced to what the product uses (no tools). One deliberate
# difference: a history reply has its reasoning cut *and* is trimmed, so it renders the same
# whether the caller stored "reasoning</think>\n\nreply" or just "reply".
CHAT_TEMPLATE = (
    "{%- if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{%- set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{% endif %}"
    "{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + (content | trim) + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)


def train_tokenizer(*, texts: Iterable[str], vocab_size: int) -> Qwen2Tokenizer:
    """Train the BPE on ``texts`` and wrap it; ``vocab_size`` is an upper bound (a small corpus
    yields fewer merges at ``min_frequency=2``)."""
    backend = Tokenizer(BPE())
    # Same pipeline Qwen2Tokenizer installs on load (see module docstring).
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer)
    model = backend.model
    vocab = backend.get_vocab()
    merges = _merges_of(backend)
    del model

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=ENDOFTEXT_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="left",  # batched generation pads on the left
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [USER_TOKEN, ASSISTANT_TOKEN]})
    tokenizer.add_tokens(
        [
            AddedToken(THINK_START, special=False, normalized=False),
            AddedToken(THINK_END, special=False, normalized=False),
            # The handoff action's block (inference_worker/handoff.py), one token each.
            AddedToken(HANDOFF_OPEN, special=False, normalized=False),
            AddedToken(HANDOFF_CLOSE, special=False, normalized=False),
        ]
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    _check_special_ids(tokenizer)
    return tokenizer


def _merges_of(backend: Tokenizer) -> list[tuple[str, str]]:
    import json

    raw = json.loads(backend.to_str())["model"]["merges"]
    # tokenizers writes merges as [a, b] pairs (older versions: "a b" strings).
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]


def _check_special_ids(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens got unexpected ids {ids}")
    if len(tokenizer) != len(tokenizer.get_vocab()) or max(tokenizer.get_vocab().values()) >= len(tokenizer):
        raise RuntimeError("tokenizer has ids outside its vocabulary")


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Iterable[dict[str, str]]) -> str:
    """The prompt string for ``messages``, ending with ``<｜Assistant｜><think>\\n``."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Iterable[dict[str, str]]) -> list[int]:
    # The template already writes the BOS token; don't let the tokenizer add special tokens.
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
