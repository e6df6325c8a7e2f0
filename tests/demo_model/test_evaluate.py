"""The evaluation's computations on hand-made cases."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference_worker.demo_model.corpus import (
    TrainingDialogue,  # noqa: E402
    tokenizer_training_texts,  # noqa: E402
)
from inference_worker.demo_model.evaluate import (  # noqa: E402
    TURN_BUCKETS,
    answer_correct,
    closest_answer,
    has_think_leak,
    logits_relative_error,
    multi_turn_failures,
    normalize_reply,
    parse_answer,
    reply_matches,
    token_agreement,
    turn_bucket,
)
from inference_worker.demo_model.tokenizer import EOS_TOKEN, train_tokenizer  # noqa: E402
from inference_worker.demo_model.train import encode_dialogue  # noqa: E402
from inference_worker.grounding import prompt_tokens
from inference_worker.prompting import build_prompt_ids  # noqa: E402


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


def test_parse_answer_takes_the_handoff_block_out_of_the_reply(tokenizer) -> None:
    text = "Wants a person.\n</think>\n\nPassing you on.\n<handoff>customer_request</handoff>" + EOS_TOKEN
    answer = parse_answer(tokenizer=tokenizer, token_ids=tokenizer(text, add_special_tokens=False)["input_ids"])
    assert answer.reply == "Passing you on." and answer.handoff == "customer_request"
    assert answer_correct(answer, expected_reply="Passing you on.", expected_handoff="customer_request")
    # the right words without the action are not a right answer, nor an action where none is due
    plain = parse_answer(
        tokenizer=tokenizer, token_ids=tokenizer("r\n</think>\n\nPassing you on." + EOS_TOKEN)["input_ids"]
    )
    assert plain.handoff is None
    assert not answer_correct(plain, expected_reply="Passing you on.", expected_handoff="customer_request")
    assert not answer_correct(answer, expected_reply="Passing you on.", expected_handoff="")


def _report(**accuracies: float) -> dict:
    return {
        "accuracy": sum(accuracies.values()) / len(accuracies),
        "by_turn": {name: {"turns": 40, "accuracy": accuracies[name]} for name, _, _ in TURN_BUCKETS},
    }


def test_turn_buckets() -> None:
    assert [turn_bucket(n) for n in range(1, 11)] == ["1", "2-3", "2-3", "4-6", "4-6", "4-6"] + ["7-10"] * 4
    with pytest.raises(ValueError):
        turn_bucket(11)


def test_multi_turn_thresholds() -> None:
    good = _report(**{"1": 0.95, "2-3": 0.94, "4-6": 0.93, "7-10": 0.93})
    assert multi_turn_failures({"fp16": {"greedy": good}, "gptq-int4": {"greedy": good, "sampled": good}}) == []
    low = _report(**{"1": 0.95, "2-3": 0.94, "4-6": 0.89, "7-10": 0.93})
    assert multi_turn_failures({"fp16": {"greedy": low}}) == ["fp16 turns 4-6: accuracy 0.890 < 0.9"]
    drop = _report(**{"1": 0.99, "2-3": 0.97, "4-6": 0.96, "7-10": 0.95})
    assert ["turns 7-10" in f for f in multi_turn_failures({"fp16": {"greedy": drop}})] == [True]
    worse = _report(**{"1": 0.95, "2-3": 0.94, "4-6": 0.90, "7-10": 0.93})  # 0.90 < 0.97 x 0.93
    failures = multi_turn_failures({"fp16": {"greedy": good}, "gptq-int4": {"greedy": worse}})
    assert failures == ["gptq-int4 turns 4-6: accuracy 0.900 < 0.902"]
    sampled = _report(**{"1": 0.9, "2-3": 0.9, "4-6": 0.9, "7-10": 0.9})
    failures = multi_turn_failures({"fp16": {"greedy": good, "sampled": sampled}})
    assert len(failures) == 1 and "fp16 sampled accuracy" in failures[0]


def test_training_sees_the_prompt_the_worker_builds_and_learns_every_answer_in_it(tokenizer) -> None:
    """A long conversation is trimmed to the budget by the worker's own code; the labels are the
    earlier answers (each with its end token) and the completion, never a customer's words."""
    history = []
    for n in range(9):
        history += [
            {"role": "user", "content": f"question number {n} about my order"},
            {"role": "assistant", "content": "You can follow your order under Account > Orders."},
        ]
    dialogue = TrainingDialogue(
        intent_id="refunds",
        messages=(*history, {"role": "user", "content": "How long does a refund take?"}),
        reasoning="Refunds.",
        reply="Refunds take 5 days.",
    )
    ids, labels = encode_dialogue(tokenizer=tokenizer, dialogue=dialogue, budget_tokens=192)
    # Without passages the conversation keeps to its half of the budget, as in the worker.
    prompt = build_prompt_ids(tokenizer=tokenizer, turns=list(dialogue.messages), budget_tokens=prompt_tokens(192))
    assert ids[: len(prompt)] == prompt and len(prompt) <= 96
    assert "question number 0" not in tokenizer.decode(prompt)  # the oldest turns went
    completion = tokenizer(dialogue.completion + EOS_TOKEN, add_special_tokens=False)["input_ids"]
    assert ids[len(prompt) :] == completion and labels[len(prompt) :] == completion
    learned = tokenizer.decode([t for t in labels[: len(prompt)] if t != -100])
    kept = tokenizer.decode(prompt).count("Account > Orders")
    assert kept >= 1 and learned == ("You can follow your order under Account > Orders." + EOS_TOKEN) * kept
    assert "question" not in learned and "<think>" not in learned


def test_edited_outcomes_tell_reading_failures_from_picking_failures() -> None:
    from chatbot.knowledge.text import Passage
    from inference_worker.demo_model.evaluate_grounding import EDITED_OUTCOMES, edited_outcome

    hours = Passage("contact", "Contact", "hours", "Opening hours", "We are open 9:00-17:00 on weekdays.")
    costs = Passage("shipping", "Shipping", "costs", "Costs", "Standard shipping costs €4.95; express costs €9.95.")
    passages = [costs, hours]
    known = ["We are open 8:00-20:00 on weekdays.", "Standard shipping costs €4.95; express costs €9.95."]

    def outcome(reply: str, *, not_found: bool = False) -> str:
        found = edited_outcome(reply=reply, not_found=not_found, passages=passages, number=2, known=known)
        assert found in EDITED_OUTCOMES
        return found

    assert outcome("We are open 9:00-17:00 on weekdays. [2]") == "follows"
    assert outcome("we are  open 9:00-17:00 on weekdays.[2]") == "follows"
    assert outcome("We are open 9:00-17:00 on weekdays. [1]") == "wrong_number"
    assert outcome("We are open 8:00-20:00 on weekdays. [2]") == "figure_wrong"  # the old figures
    # follows_article's test: the figures, cited; other words around them do not make it a miss
    assert outcome("We are open 9:00-17:00 on weekdays and Saturdays. [2]") == "follows"
    assert outcome("We are open 9:00-17:00 and 18:00-20:00 on weekdays. [2]") == "copy_broke"
    assert outcome("Standard shipping costs €4.95; express costs €9.95. [1]") == "another_passage"
    assert outcome("I'm sorry, I couldn't find that.", not_found=True) == "not_found"
    assert outcome("I'm sorry, I can only help with Northwind Goods orders.") == "another_reply"


def test_the_expected_reasoning_is_given_as_training_tokenizes_it(tokenizer) -> None:
    from chatbot.knowledge.text import Passage
    from inference_worker.demo_model.corpus import Turn, named_passage
    from inference_worker.demo_model.evaluate_grounding import reasoning_given

    hours = Passage("contact", "Contact", "hours", "Opening hours", "We are open 9:00-17:00 on weekdays.")
    costs = Passage("shipping", "Shipping", "costs", "Costs", "Standard shipping costs €4.95.")
    turn = Turn(
        answer_id="opening_hours",
        question="When are you open?",
        reasoning="The customer asks when we are open. Our hours are known.",
        reply="We are open.",
        source=hours.key,
    )
    prompt = [1, 2, 3]
    ids = reasoning_given(tokenizer, prompt, turn, [costs, hours])
    assert ids[:3] == prompt and ids[-1] == tokenizer.convert_tokens_to_ids("</think>")
    reasoning = tokenizer.decode(ids[3:-1])
    assert reasoning == "The customer asks when we are open. Passage 2 answers it.\n"
    # The same ids as the training completion's start (tokenized whole, not in pieces).
    completion = tokenizer(
        reasoning + "</think>\n\nWe are open 9:00-17:00 on weekdays. [2]" + EOS_TOKEN, add_special_tokens=False
    )["input_ids"]
    assert completion[: len(ids) - 3] == ids[3:]
    assert named_passage(reasoning) == 2
    assert named_passage("The customer asks when we are open. No passage answers it.") is None
