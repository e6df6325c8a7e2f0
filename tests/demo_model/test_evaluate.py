"""The evaluation's computations on hand-made cases."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference_worker.demo_model.corpus import tokenizer_training_texts  # noqa: E402
from inference_worker.demo_model.evaluate import (  # noqa: E402
    closest_answer,
    has_think_leak,
    logits_relative_error,
    normalize_reply,
    parse_answer,
    reply_matches,
    token_agreement,
)
from inference_worker.demo_model.tokenizer import EOS_TOKEN, train_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(texts=tokenizer_training_texts(), vocab_size=2048)


def test_reply_matching_is_normalized_exact_match() -> None:
    expected = "You can return unused items within 30 days."
    assert reply_matches(reply="you can  return unused items\nwithin 30 days. ", expected=expected)
    assert not reply_matches(reply="You can return unused items within 30 days", expected=expected)
    assert not reply_matches(reply="You can return items within 30 days.", expected=expected)
    assert normalize_reply("  A\tB \n") == "a b"


def test_think_leak_detection() -> None:
    assert has_think_leak("Sure.</think> More")
    assert has_think_leak("<think>again")
    assert not has_think_leak("We think you will like it.")


def test_token_agreement_common_prefix_over_longer_sequence() -> None:
    assert token_agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert token_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert token_agreement([1, 2], [1, 2, 3, 4]) == 0.5  # stopping early is a disagreement
    assert token_agreement([5], [6]) == 0.0
    assert token_agreement([], []) == 1.0
    assert token_agreement([], [1]) == 0.0


def test_logits_relative_error_on_known_tensors() -> None:
    a = torch.tensor([3.0, 4.0])
    assert logits_relative_error(a, a.clone()) == 0.0
    assert logits_relative_error(a, torch.zeros(2)) == pytest.approx(1.0)
    assert logits_relative_error(a, torch.tensor([3.0, 5.0])) == pytest.approx(0.2)
    assert logits_relative_error(a, torch.tensor([3.0, 4.0], dtype=torch.bfloat16)) == 0.0


def test_closest_answer_by_word_overlap() -> None:
    canonical = {"a": "Refunds take five days.", "b": "Shipping costs four euros."}
    assert closest_answer(reply="shipping costs four", canonical=canonical) == "b"
    assert closest_answer(reply="", canonical=canonical) is None


def test_parse_answer_splits_reasoning_and_reply(tokenizer) -> None:
    ids = tokenizer(
        f"The customer wants a refund.\n</think>\n\nWe refund you.{EOS_TOKEN}",
        add_special_tokens=False,
    )["input_ids"]
    answer = parse_answer(tokenizer=tokenizer, token_ids=ids)
    assert answer.reasoning == "The customer wants a refund."
    assert answer.reply == "We refund you."
    assert answer.closed_think and answer.ended
    assert answer.reply_tokens == len(tokenizer("\n\nWe refund you.", add_special_tokens=False)["input_ids"])


def test_parse_answer_without_think_close_or_end(tokenizer) -> None:
    ids = tokenizer("Just a reply", add_special_tokens=False)["input_ids"]
    answer = parse_answer(tokenizer=tokenizer, token_ids=ids)
    assert answer.reply == "Just a reply"
    assert not answer.closed_think and not answer.ended


def test_parse_answer_reports_a_leak_after_the_first_think_close(tokenizer) -> None:
    ids = tokenizer("r\n</think>\n\nreply </think> more", add_special_tokens=False)["input_ids"]
    answer = parse_answer(tokenizer=tokenizer, token_ids=ids)
    assert has_think_leak(answer.reply)
