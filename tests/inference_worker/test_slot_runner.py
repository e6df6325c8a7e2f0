"""The slot runner (CUDA's dense cache) on a real Qwen2 and Llama, run eagerly on the CPU: the
same decode function that CUDA graphs capture gives `generate`'s greedy tokens as requests join,
leave, and reuse the slots of those that left."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from inference_worker.engine.slot_runner import COLUMN_BUCKET, SLOT_BUCKETS, SlotModelRunner, _bucket
from tests.inference_worker.test_dense_runner import PROMPTS, batched, model, one_at_a_time  # noqa: F401

GREEDY = GenerationConfig(do_sample=False)


def slot_runner(model, *, slots: int, columns: int = 64) -> SlotModelRunner:  # noqa: F811
    return SlotModelRunner(model=model, generation_config=GREEDY, pad_token_id=0, slots=slots, columns=columns)


def test_greedy_tokens_equal_generate_as_requests_join_and_leave(model):  # noqa: F811
    expected = one_at_a_time(model, PROMPTS)
    runner = slot_runner(model, slots=16)
    assert not runner.graphs  # no CUDA here: decode steps run the captured function eagerly
    assert batched(runner, PROMPTS) == expected
    # Every request left: every slot is free again, and nothing is cached.
    assert sorted(runner._free) == list(range(16)) and runner.row_slots == [] and set(runner.lengths) == {0}


def test_a_slot_left_by_a_longer_answer_serves_a_new_request_as_generate_would(model):  # noqa: F811
    """Three slots for eleven requests, in waves: each new request takes a slot whose columns
    still hold an earlier request's longer prompt and answer; they are masked, and a decode step
    covers slots that nobody uses at that moment (the slot count is bucketed)."""
    prompts = [list(range(40 + i, 40 + i + 9 - (i % 4) * 2)) for i in range(11)]
    expected = one_at_a_time(model, prompts)
    runner = slot_runner(model, slots=3)
    waves = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]

    def joins(step: int) -> int:
        return min(waves[step % len(waves)], 3 - len(runner.row_slots))

    assert batched(runner, prompts, joins=joins) == expected


def test_rows_that_leave_free_their_slots_for_the_next_arrivals(model):  # noqa: F811
    runner = slot_runner(model, slots=4)
    _, first = runner.step([], [[5, 6, 7], [8, 9], [10, 11, 12, 13]])
    assert runner.row_slots == [0, 1, 2] and runner.lengths[:3] == [3, 2, 4]
    next_tokens, _ = runner.step(first, [])
    assert runner.lengths[:3] == [4, 3, 5]
    assert runner.keep([0, 2]) == [0, 2]
    assert runner.row_slots == [0, 2] and runner.lengths[1] == 0
    runner.step([next_tokens[0], next_tokens[2]], [[14, 15]])
    assert runner.row_slots == [0, 2, 1]  # the lowest free slot


def test_what_does_not_fit_is_refused_with_the_reason(model):  # noqa: F811
    runner = slot_runner(model, slots=2, columns=8)
    with pytest.raises(RuntimeError, match="does not fit a cache slot of 8"):
        runner.step([], [list(range(10, 19))])
    with pytest.raises(RuntimeError, match="3 arrivals but 2 free cache slots"):
        runner.step([], [[5], [6], [7]])


def test_buckets():
    assert [_bucket(n, SLOT_BUCKETS, 256) for n in (1, 3, 8, 9, 33, 200, 256)] == [1, 4, 8, 16, 48, 224, 256]
    assert _bucket(300, SLOT_BUCKETS, 512) == 320  # past the table: steps of its last gap
    assert _bucket(20, SLOT_BUCKETS, 12) == 12  # never past the slots there are
    assert [_bucket(n, (COLUMN_BUCKET,), 1000) for n in (1, 256, 257, 999)] == [256, 256, 512, 1000]


def test_a_decode_step_that_cannot_be_captured_runs_eagerly(model, caplog):  # noqa: F811
    """Asked for graphs where none can be captured (here: no CUDA at all), the runner says so
    once and decodes eagerly; the tokens are still `generate`'s."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU the capture succeeds")
    runner = SlotModelRunner(model=model, generation_config=GREEDY, pad_token_id=0, slots=16, columns=64, graphs=True)
    with caplog.at_level("WARNING", logger="inference_worker.engine.slot_runner"):
        assert batched(runner, PROMPTS) == one_at_a_time(model, PROMPTS)
    assert not runner.graphs and runner.graphs_captured == 0
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "CUDA graph capture failed" in caplog.records[0].message


class _StandInGraph:
    """Stands in for a captured CUDA graph on the CPU (no graph can be captured here): its
    replay runs the runner's eager decode pass into the graph's output tensor, as a right graph
    would, or goes wrong in one of the ways a graph can:
    - "negated": other logits in every slot;
    - "one used slot": other logits in one slot in use only;
    - "unused slots": other logits only in slots nobody uses at that step (the step's slot
      count is bucketed), which no one reads: harmless;
    - "empty": computes nothing, as an empty capture would;
    - "frozen": right at its first replay, then always those logits again, as a graph that
      froze its capture's inputs would.
    What is under test is the runner's check of each new graph."""

    def __init__(self, runner: SlotModelRunner, count: int, span: int, mode: str) -> None:
        self.runner, self.count, self.span, self.mode = runner, count, span, mode
        self.logits = runner._forward(count, span)[0].clone()
        self.replays = 0
        self.harmless_changes = 0

    def replay(self) -> None:
        self.replays += 1
        if self.mode == "empty" or (self.mode == "frozen" and self.replays > 1):
            return
        logits = self.runner._forward(self.count, self.span)[0].clone()
        used = self.runner.row_slots  # every row decodes at each step of `batched`
        if self.mode == "negated":
            logits = -logits
        elif self.mode == "one used slot":
            logits[used[0]] = -logits[used[0]]
        elif self.mode == "unused slots":
            unused = [slot for slot in range(self.count) if slot not in used]
            logits[unused] = -logits[unused] + 100
            self.harmless_changes += len(unused)
        self.logits.copy_(logits)


def graphs_on_the_cpu(model, monkeypatch, mode: str) -> tuple[SlotModelRunner, list]:  # noqa: F811
    runner = SlotModelRunner(model=model, generation_config=GREEDY, pad_token_id=0, slots=16, columns=64, graphs=True)
    graphs: list[_StandInGraph] = []

    def capture(count: int, span: int):
        graphs.append(_StandInGraph(runner, count, span, mode))
        return graphs[-1], graphs[-1].logits

    monkeypatch.setattr(runner, "_capture", capture)
    return runner, graphs


@pytest.mark.parametrize("mode", ["right", "unused slots"])
def test_each_new_graph_is_checked_against_the_eager_pass_and_kept_when_it_agrees(model, monkeypatch, mode):  # noqa: F811
    runner, graphs = graphs_on_the_cpu(model, monkeypatch, mode)
    assert batched(runner, PROMPTS) == one_at_a_time(model, PROMPTS)
    assert runner.graphs and runner.graphs_captured == len(graphs) == len(runner._graphs) > 1
    # Later decode steps of the same shape replay the kept graph instead of running eagerly.
    assert sum(graph.replays for graph in graphs) > 2 * len(graphs)
    if mode == "unused slots":
        assert sum(graph.harmless_changes for graph in graphs) > 0


@pytest.mark.parametrize("mode", ["negated", "one used slot", "empty", "frozen"])
def test_a_graph_whose_logits_differ_from_the_eager_pass_turns_graphs_off(model, monkeypatch, caplog, mode):  # noqa: F811
    runner, graphs = graphs_on_the_cpu(model, monkeypatch, mode)
    with caplog.at_level("WARNING", logger="inference_worker.engine.slot_runner"):
        # The step that found the wrong graph answers with the eager pass's tokens, and so does
        # every later one.
        assert batched(runner, PROMPTS) == one_at_a_time(model, PROMPTS)
    # A frozen graph passes its capture's check and is caught at its next use.
    assert len(graphs) == 1 and graphs[0].replays == (2 if mode == "frozen" else 1)
    assert not runner.graphs and runner._graphs == {}
    assert [r.message for r in caplog.records] == [
        f"a CUDA graph's logits differ from the eager pass's ({graphs[0].count} slots, {graphs[0].span} columns); "
        "decode steps run eagerly"
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (bench/gpu.py checks them there)")
def test_graph_replays_give_the_eager_tokens_on_cuda(model):  # noqa: F811
    model = model.to("cuda")
    expected = batched(
        SlotModelRunner(model=model, generation_config=GREEDY, pad_token_id=0, slots=16, columns=64, graphs=False),
        PROMPTS,
    )
    runner = SlotModelRunner(model=model, generation_config=GREEDY, pad_token_id=0, slots=16, columns=64, graphs=True)
    assert batched(runner, PROMPTS) == expected
    assert runner.graphs and runner.graphs_captured == len(runner._graphs) > 0
