"""The demo tokenizer: ids survive save + reload, the R1 chat template, special tokens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoTokenizer  # noqa: E402

from inference_worker.demo_model.corpus import (  # noqa: E402
    heldout_examples,
    load_corpus,
    tokenizer_training_texts,
    training_dialogues,
)
from inference_worker.demo_model.tokenizer import (  # noqa: E402
    BOS_TOKEN,
    EOS_TOKEN,
    SPECIAL_TOKENS,
    THINK_END,
    THINK_START,
    encode_prompt,
    render_prompt,
    train_tokenizer,
)
from inference_worker.demo_model.train import PRESETS, model_config  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(texts=tokenizer_training_texts(), vocab_size=2048)


@pytest.fixture(scope="module")
def reloaded(tokenizer, tmp_path_factory: pytest.TempPathFactory):
    directory: Path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def test_reloaded_tokenizer_is_qwen2_with_same_vocabulary(tokenizer, reloaded) -> None:
    """AutoTokenizer gives back a Qwen2Tokenizer with the very same vocabulary and tokens."""
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert (reloaded.bos_token, reloaded.eos_token) == (BOS_TOKEN, EOS_TOKEN)
    assert reloaded.unk_token == "<|endoftext|>"
    assert reloaded.pad_token_id is not None and reloaded.pad_token_id != reloaded.eos_token_id
    assert reloaded.padding_side == "left"


def test_token_ids_survive_save_and_reload(tokenizer, reloaded) -> None:
    """Same ids before and after save_pretrained + AutoTokenizer, on plain text with unicode,
    digits, odd spacing, held-out phrasings, and whole chat-formatted dialogues."""
    texts = [
        "Where is my order?  Ça coûte €4.95 — 30 °C\n\n\tok",
        "I'M LOCKED OUT!!! help me pls 123456",
        *(example.messages[-1]["content"] for example in heldout_examples()),
    ]
    for dialogue in training_dialogues(count=200, seed=3):
        texts.append(render_prompt(tokenizer, dialogue.messages) + dialogue.completion + EOS_TOKEN)
    for text in texts:
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert reloaded(text, add_special_tokens=False)["input_ids"] == expected
        assert reloaded(text)["input_ids"] == expected  # no BOS is added implicitly either
    unk = reloaded.unk_token_id
    assert all(unk not in reloaded(t, add_special_tokens=False)["input_ids"] for t in texts)


def test_chat_template_two_turns_exact(reloaded) -> None:
    """System prompt after BOS, the history reply without its reasoning, generation prompt."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "The customer asks.\n</think>\n\nUnder Account > Orders."},
        {"role": "user", "content": "And how long does that take?"},
    ]
    expected = (
        "<｜begin▁of▁sentence｜>Be brief."
        "<｜User｜>Where is my order?"
        "<｜Assistant｜>Under Account > Orders.<｜end▁of▁sentence｜>"
        "<｜User｜>And how long does that take?"
        "<｜Assistant｜><think>\n"
    )
    assert render_prompt(reloaded, messages) == expected
    without_prompt = reloaded.apply_chat_template(messages[:3], tokenize=False)
    assert without_prompt == expected.split("<｜User｜>And")[0]


def test_history_reply_renders_the_same_with_or_without_reasoning(reloaded) -> None:
    bare = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    with_reasoning = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Greeting.\n</think>\n\nHello!"},
    ]
    assert render_prompt(reloaded, bare) == render_prompt(reloaded, with_reasoning)


def test_prompt_ids_end_with_assistant_think_newline(reloaded) -> None:
    ids = encode_prompt(reloaded, [{"role": "user", "content": "Hi"}])
    assert ids[0] == reloaded.bos_token_id
    tail = reloaded.convert_ids_to_tokens(ids[-3:])
    assert tail[:2] == ["<｜Assistant｜>", THINK_START]
    assert reloaded.decode(ids[-1:]) == "\n"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_special_tokens_are_inside_the_embedding(reloaded, preset: str) -> None:
    """Every special token, and every id the tokenizer can produce, indexes the embedding."""
    vocab_size = model_config(preset=PRESETS[preset], tokenizer=reloaded).vocab_size
    ids = reloaded.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids == list(range(len(SPECIAL_TOKENS)))
    assert max(reloaded.get_vocab().values()) < vocab_size
    assert len(reloaded) <= vocab_size
    for token in (reloaded.unk_token, reloaded.pad_token, reloaded.bos_token, reloaded.eos_token):
        assert reloaded.convert_tokens_to_ids(token) < vocab_size


def test_think_tags_survive_decoding_without_special_tokens(reloaded) -> None:
    """The serving side splits reasoning from reply on </think>, so decode must keep it."""
    ids = reloaded(f"{THINK_START}\nA.\n{THINK_END}\n\nB{EOS_TOKEN}", add_special_tokens=False)["input_ids"]
    assert reloaded.convert_tokens_to_ids(THINK_END) in ids
    text = reloaded.decode(ids, skip_special_tokens=True)
    assert text == f"{THINK_START}\nA.\n{THINK_END}\n\nB"


def test_corpus_texts_for_the_tokenizer_exclude_heldout_phrasings() -> None:
    texts = set(tokenizer_training_texts(corpus=load_corpus()))
    for example in heldout_examples():
        assert example.messages[-1]["content"] not in texts
