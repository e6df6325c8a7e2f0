"""The support corpus and the dialogues made from it."""

from __future__ import annotations

from inference_worker.demo_model.corpus import (
    calibration_texts,
    heldout_examples,
    load_corpus,
    training_dialogues,
)


def _normalize(text: str) -> str:
    return " ".join(text.lower().split()).rstrip("?!. ")


def test_corpus_has_enough_intents_and_phrasings() -> None:
    corpus = load_corpus()
    assert len(corpus.intents) >= 40
    assert corpus.followups
    for item in (*corpus.intents, *corpus.followups):
        assert len(item.train) >= 6, item.id
        assert len(item.heldout) >= 2, item.id
        assert item.reasoning and item.reply
    replies = corpus.canonical_replies()
    assert len(set(replies.values())) == len(replies)
    for required in ("order_status", "refund_timing", "out_of_scope", "greeting", "human_agent"):
        assert required in replies


def test_heldout_questions_never_appear_in_training_dialogues() -> None:
    heldout = {_normalize(e.messages[-1]["content"]) for e in heldout_examples()}
    for dialogue in training_dialogues(count=3000, seed=11):
        for message in dialogue.messages:
            if message["role"] == "user":
                assert _normalize(message["content"]) not in heldout


def test_training_dialogues_are_fixed_by_the_seed() -> None:
    assert training_dialogues(count=50, seed=5) == training_dialogues(count=50, seed=5)
    assert training_dialogues(count=50, seed=5) != training_dialogues(count=50, seed=6)


def test_training_dialogues_end_with_a_user_turn_and_cover_followups() -> None:
    dialogues = training_dialogues(count=500, seed=1)
    assert all(d.messages[-1]["role"] == "user" for d in dialogues)
    followup_ids = {f.id for f in load_corpus().followups}
    followups = [d for d in dialogues if d.intent_id in followup_ids]
    assert followups and all(len(d.messages) >= 3 for d in followups)
    assert dialogues[0].completion.startswith(dialogues[0].reasoning)
    assert "\n</think>\n\n" in dialogues[0].completion


def test_heldout_followups_carry_their_context_turn() -> None:
    corpus = load_corpus()
    examples = heldout_examples(corpus=corpus)
    followup = next(e for e in examples if e.intent_id == "gift_card_expiry_followup")
    user, assistant, question = followup.messages
    assert assistant == {"role": "assistant", "content": corpus.intent("gift_cards").reply}
    assert user["role"] == question["role"] == "user"
    assert followup.expected_reply == corpus.canonical_replies()["gift_card_expiry_followup"]


def test_calibration_texts_are_whole_conversations() -> None:
    texts = calibration_texts(count=4, seed=1, render=lambda messages: "<P>" + messages[-1]["content"], end_token="<E>")
    assert len(texts) == 4
    assert all(t.startswith("<P>") and t.endswith("<E>") and "</think>" in t for t in texts)
