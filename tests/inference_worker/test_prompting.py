"""The prompt the worker builds with the model's own chat template, within the budget."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from inference_worker.prompting import build_prompt_ids


@pytest.fixture(scope="module")
def tokenizer(test_models):
    return AutoTokenizer.from_pretrained(test_models["gptq-int4"])


def test_prompt_ends_inside_the_reasoning(tokenizer):
    ids = build_prompt_ids(tokenizer=tokenizer, turns=[{"role": "user", "content": "hi"}], budget_tokens=512)
    assert tokenizer.decode(ids).endswith("<｜User｜>hi<｜Assistant｜><think>\n")


def test_oldest_turns_are_dropped_to_fit_and_the_last_question_is_kept(tokenizer):
    turns = []
    for index in range(30):
        turns += [
            {"role": "user", "content": f"question {index} about my order"},
            {"role": "assistant", "content": f"answer {index}"},
        ]
    turns.append({"role": "user", "content": "and the last one?"})
    ids = build_prompt_ids(tokenizer=tokenizer, turns=turns, budget_tokens=60)
    text = tokenizer.decode(ids)
    assert len(ids) <= 60
    assert text.endswith("<｜User｜>and the last one?<｜Assistant｜><think>\n")
    assert "question 0 " not in text
    assert text.index("<｜User｜>") < text.index("<｜Assistant｜>")  # still starts with a customer turn


def test_a_single_huge_message_keeps_its_end(tokenizer):
    turns = [{"role": "user", "content": "blah " * 2000 + "where is my parcel?"}]
    ids = build_prompt_ids(tokenizer=tokenizer, turns=turns, budget_tokens=100)
    assert len(ids) <= 100
    assert "where is my parcel?" in tokenizer.decode(ids)


def test_the_conversation_must_end_with_the_customer(tokenizer):
    with pytest.raises(ValueError):
        build_prompt_ids(tokenizer=tokenizer, turns=[{"role": "assistant", "content": "hi"}], budget_tokens=50)
