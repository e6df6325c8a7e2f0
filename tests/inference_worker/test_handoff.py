"""The model's handoff action: parsing the block, and keeping it out of what the customer sees
while the answer streams. Pure logic, no model (the worker test hands a conversation off through
the real model)."""

from __future__ import annotations

from inference_worker.engine.stream import IncrementalDecoder, split_reasoning
from inference_worker.handoff import HANDOFF_OPEN, REASON_MAX_CHARS, UNSPECIFIED, parse_handoff


def test_a_well_formed_block_gives_its_reason_and_detail():
    action = parse_handoff("<handoff>complaint</handoff>")
    assert action.reason == "complaint" and action.well_formed
    assert action.detail == "complaint: A complaint the bot cannot resolve"
    # A real checkpoint's own words are kept as they are, whitespace folded.
    free = parse_handoff("<handoff> the customer wants\n a refund manager </handoff>")
    assert free.reason == "the customer wants a refund manager" and free.detail == free.reason


def test_no_block_is_no_handoff_whatever_the_words_say():
    assert parse_handoff("") is None
    assert parse_handoff("I'm passing you to a colleague") is None
    assert parse_handoff("complaint</handoff>") is None  # a close tag alone


def test_malformed_blocks_still_hand_off_with_what_can_be_read():
    cut = parse_handoff("<handoff>ang")  # cut off by the token limit
    assert cut.reason == "ang" and not cut.well_formed
    empty = parse_handoff("<handoff></handoff>")
    assert empty.reason == UNSPECIFIED and empty.well_formed
    assert parse_handoff("<handoff>").reason == UNSPECIFIED
    nested = parse_handoff("<handoff>legal<handoff></handoff>")
    assert nested.reason == "legal"
    long = parse_handoff("<handoff>" + "x" * 1000 + "</handoff>")
    assert len(long.reason) == REASON_MAX_CHARS


def test_split_keeps_the_block_apart_from_the_answer():
    split = split_reasoning(
        "Wants a person.\n</think>\n\nPassing you on.\n<handoff>customer_request</handoff>", ["<handoff>"]
    )
    assert split.answer == "Passing you on."
    assert split.hidden == "<handoff>customer_request</handoff>"
    assert parse_handoff(split.hidden).reason == "customer_request"
    # Written inside the reasoning it is no action: only the answer's end counts.
    thinking = split_reasoning("maybe <handoff>legal</handoff>?\n</think>\n\nHello", ["<handoff>"])
    assert thinking.answer == "Hello" and thinking.hidden == ""


def test_a_block_split_across_streamed_deltas_never_reaches_the_customer():
    """A checkpoint that writes the tag as text: `<`, `hand`, `off`, `>` arrive one by one."""
    pieces = ["Angry.", "\n</think>\n\n", "I'm sorry", ".", " ", "<", "hand", "off", ">", "ang", "ry", "</", "handoff>"]
    decoder = IncrementalDecoder(lambda ids: "".join(pieces[i] for i in ids), hide_from=(HANDOFF_OPEN,))
    shown = []
    for n in range(1, len(pieces) + 1):
        _, answer = decoder.update(list(range(n)), final=n == len(pieces))
        shown.append(answer)
        assert "<" not in "".join(shown), shown
    assert "".join(shown) == "I'm sorry." == decoder.result().answer
    assert parse_handoff(decoder.result().hidden).reason == "angry"


def test_a_lone_angle_bracket_is_shown_once_it_is_not_a_tag():
    pieces = ["r", "\n</think>\n\n", "1 <", " 2", " done"]
    decoder = IncrementalDecoder(lambda ids: "".join(pieces[i] for i in ids), hide_from=(HANDOFF_OPEN,))
    text = "".join(decoder.update(list(range(n)), final=n == len(pieces))[1] for n in range(1, len(pieces) + 1))
    assert text == "1 < 2 done" and decoder.result().hidden == ""
