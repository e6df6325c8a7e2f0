"""Splitting the R1 reasoning from the answer while streaming: pure logic, no model."""

from inference_worker.engine.stream import IncrementalDecoder, split_reasoning


def test_split_before_and_after_the_closing_tag():
    assert split_reasoning("The customer asks about refunds.").in_reasoning
    split = split_reasoning("Refund question.\n</think>\n\nRefunds take 5 days.")
    assert (split.reasoning, split.answer, split.in_reasoning) == ("Refund question.", "Refunds take 5 days.", False)


def test_tags_written_after_the_reasoning_never_reach_the_answer():
    split = split_reasoning("r</think>\n\nHello <think>again</think> there")
    assert "<think>" not in split.answer and "</think>" not in split.answer
    assert split.answer == "Hello again there"


def fake_decode(pieces):
    vocab = ["Customer ", "asks.", "\n</", "think>", "\n\n", "We ", "ship ", "world", "wide.", "<eos>", "\ufffd"]
    return lambda ids: "".join(vocab[i] for i in ids)


def test_deltas_hold_back_a_partial_closing_tag_and_add_up_to_the_answer():
    decoder = IncrementalDecoder(fake_decode(None), stop_strings=["<eos>"])
    seen_answer, seen_reasoning = [], []
    tokens = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    for n in range(1, len(tokens) + 1):
        reasoning, answer = decoder.update(tokens[:n], final=n == len(tokens))
        seen_answer.append(answer)
        seen_reasoning.append(reasoning)
        # No delta ever shows a piece of the tag.
        assert "</" not in answer and "think" not in answer
    assert "".join(seen_answer) == "We ship worldwide."
    assert "".join(seen_reasoning) == "Customer asks."
    assert decoder.result().answer == "We ship worldwide."


def test_an_incomplete_character_is_held_back_until_it_completes():
    decoder = IncrementalDecoder(fake_decode(None))
    decoder.update([3 - 3, 1, 2, 3, 4])  # into the answer
    _, answer = decoder.update([0, 1, 2, 3, 4, 5, 10])
    assert answer == "We"
