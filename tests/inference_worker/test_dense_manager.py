"""Our dense continuous-batching loop, with a fake model runner: pure logic, no torch."""

from __future__ import annotations

import ast
from pathlib import Path

from inference_worker.engine import dense
from inference_worker.engine.dense import DenseBatchManager

EOS = 99


class FakeRunner:
    """Row i's next token is its last token + 1; a prompt's first token is its last + 1."""

    def __init__(self, *, fail_at_step: int | None = None, reorder: bool = False) -> None:
        self.reorder = reorder  # a runner may put the kept rows in another order
        self.rows: list[str] = []  # what the runner believes is in its batch, by first token
        self.calls: list[tuple[str, int]] = []
        self.fail_at_step = fail_at_step

    def bind_thread(self) -> None:
        pass

    def step(self, last_tokens, prompts):
        self._maybe_fail()
        self.calls.append(("step", len(last_tokens), len(prompts)))
        return [token + 1 for token in last_tokens], [prompt[-1] + 1 for prompt in prompts]

    def keep(self, indices):
        self.calls.append(("keep", tuple(indices)))
        return list(reversed(indices)) if self.reorder else list(indices)

    def _maybe_fail(self):
        if self.fail_at_step is not None and len(self.calls) >= self.fail_at_step:
            raise RuntimeError("device lost")


class Collector:
    def __init__(self) -> None:
        self.steps: list[list[dense.DenseOutput]] = []

    def deliver_batch(self, outputs) -> None:
        self.steps.append(outputs)


def manager(runner: FakeRunner, max_batch: int = 4) -> tuple[DenseBatchManager, Collector]:
    m = DenseBatchManager(runner=runner, max_batch=max_batch, eos_token_ids=[EOS])
    m.output_router = Collector()
    return m, m.output_router


def test_the_manager_imports_no_torch():
    tree = ast.parse(Path(dense.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "torch" not in imported and "transformers" not in imported


def test_a_request_arriving_later_joins_the_running_batch_at_the_next_step():
    runner = FakeRunner()
    m, out = manager(runner)
    m.add_request([10], request_id="a", max_new_tokens=50)
    m.step()  # prefill a
    m.step()  # decode a alone
    m.add_request([20], request_id="b", max_new_tokens=50)
    m.step()  # decode a and prefill b in the same pass
    m.step()  # decode a and b together
    assert runner.calls == [("step", 0, 1), ("step", 1, 0), ("step", 1, 1), ("step", 2, 0)]
    assert [o.request_id for o in out.steps[-2]] == ["a", "b"]
    assert [o.request_id for o in out.steps[-1]] == ["a", "b"]
    assert out.steps[-1][0].generated_tokens == [11, 12, 13, 14]
    assert out.steps[-1][1].generated_tokens == [21, 22]


def test_a_finished_request_leaves_at_once_and_frees_its_row():
    runner = FakeRunner()
    m, out = manager(runner)
    m.add_request([96], request_id="short", max_new_tokens=50)  # 97, 98, 99 = EOS
    m.add_request([10], request_id="long", max_new_tokens=50)
    m.step()
    m.step()
    m.step()
    assert out.steps[-1][0].status == "finished" and out.steps[-1][0].generated_tokens == [97, 98, 99]
    assert runner.calls[-1] == ("keep", (1,))
    assert m.cache_holders() == {"long"}
    m.step()
    assert runner.calls[-1] == ("step", 1, 0)


def test_max_new_tokens_ends_a_request():
    m, out = manager(FakeRunner())
    m.add_request([1], request_id="a", max_new_tokens=2)
    m.step()
    m.step()
    assert out.steps[-1][0].status == "finished" and len(out.steps[-1][0].generated_tokens) == 2
    assert m.rows == []


def test_cancelling_drops_a_running_row_and_a_request_not_yet_taken():
    runner = FakeRunner()
    m, out = manager(runner)
    m.add_request([1], request_id="a", max_new_tokens=50)
    m.add_request([2], request_id="b", max_new_tokens=50)
    m.step()
    m.cancel_request("a")
    m.cancel_request("later")
    m.add_request([3], request_id="later", max_new_tokens=50)
    m.step()
    assert ("keep", (1,)) in runner.calls
    assert m.cache_holders() == {"b"}
    assert runner.calls[-1] == ("step", 1, 0)  # "later" was never prefilled
    assert all(o.request_id == "b" for o in out.steps[-1])


def test_admission_stops_at_the_batch_limit():
    runner = FakeRunner()
    m, _ = manager(runner, max_batch=2)
    for index in range(3):
        m.add_request([index], request_id=f"r{index}", max_new_tokens=50)
    m.step()
    assert runner.calls == [("step", 0, 2)]
    assert m.cache_holders() == {"r0", "r1"}


def test_a_failing_step_fails_every_request_in_the_batch_and_the_loop_goes_on():
    import time

    runner = FakeRunner(fail_at_step=2)
    m, out = manager(runner)
    m.start()
    try:
        m.add_request([1], request_id="a", max_new_tokens=50)
        deadline = time.monotonic() + 5
        while not any(o.status == "failed" for step in out.steps for o in step) and time.monotonic() < deadline:
            time.sleep(0.01)
        failed = [o for step in out.steps for o in step if o.status == "failed"]
        assert [(o.request_id, o.error) for o in failed] == [("a", "RuntimeError: device lost")]
        assert m.rows == [] and m.is_running()
    finally:
        m.stop()
    assert not m.is_running()


def test_nothing_to_do_returns_false():
    m, _ = manager(FakeRunner())
    assert m.step() is False


def test_while_the_batch_decodes_arrivals_wait_briefly_to_be_prefilled_together():
    runner = FakeRunner()
    m = DenseBatchManager(runner=runner, max_batch=8, eos_token_ids=[EOS], prefill_wait_s=0.03)
    m.output_router = Collector()
    clock = [100.0]
    m._now = lambda: clock[0]  # time is injected, never slept on
    m.add_request([1], request_id="a", max_new_tokens=50)
    m.step()  # an idle batch prefills at once
    m.add_request([2], request_id="b", max_new_tokens=50)
    clock[0] += 0.01
    m.add_request([3], request_id="c", max_new_tokens=50)
    m.step()  # b has waited 10 ms: keep decoding a
    clock[0] += 0.025
    m.step()  # b has waited 35 ms: b and c in one prefill pass
    assert runner.calls == [("step", 0, 1), ("step", 1, 0), ("step", 1, 2)]
    assert m.cache_holders() == {"a", "b", "c"}


def test_rows_follow_the_order_the_runner_gives_the_kept_rows():
    runner = FakeRunner(reorder=True)
    m, out = manager(runner)
    m.add_request([96], request_id="short", max_new_tokens=50)  # 97, 98, 99 = EOS
    m.add_request([10], request_id="b", max_new_tokens=50)
    m.add_request([30], request_id="c", max_new_tokens=50)
    m.step()
    m.step()
    m.step()  # "short" ends; the runner keeps b and c as [c, b]
    assert runner.calls[-1] == ("keep", (1, 2))
    m.step()
    last = {o.request_id: o.generated_tokens for o in out.steps[-1]}
    # Each row's next token follows its own last one: the manager fed them in the runner's order.
    assert [o.request_id for o in out.steps[-1]] == ["c", "b"]
    assert last == {"b": [11, 12, 13, 14], "c": [31, 32, 33, 34]}


def test_an_idle_loop_ends_its_thread_and_the_next_request_starts_one():
    """The loop's thread (and with it torch's OpenMP pool, which belongs to the thread) ends
    after `idle_exit_s` with nothing to do; the next request is served by a new one."""
    import time

    class CountingRunner(FakeRunner):
        def __init__(self) -> None:
            super().__init__()
            self.bound = 0

        def bind_thread(self) -> None:
            self.bound += 1

    def wait_until(condition) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    runner = CountingRunner()
    m = DenseBatchManager(runner=runner, max_batch=4, eos_token_ids=[EOS], idle_exit_s=0.05)
    out = m.output_router = Collector()
    finished = lambda rid: any(o.request_id == rid and o.is_finished() for step in out.steps for o in step)  # noqa: E731
    m.start()
    try:
        m.add_request([1], request_id="a", max_new_tokens=3)
        wait_until(lambda: finished("a"))
        assert finished("a")
        wait_until(lambda: not m.loop_thread_alive)
        assert not m.loop_thread_alive and m.is_running()  # idle: no thread, still serving
        m.add_request([5], request_id="b", max_new_tokens=3)
        wait_until(lambda: finished("b"))
        assert finished("b")
        assert m.loop_threads_started == 2 and runner.bound == 2
    finally:
        m.stop()
    assert not m.is_running()


THINK, END_THINK = 5, 6
CLOSING = (200, END_THINK, 200, 200)  # "\n", "</think>", "\n", "\n"


def budgeted_manager() -> tuple[FakeRunner, DenseBatchManager]:
    """A manager over the fake model that knows the reasoning markers (so budgets apply)."""
    runner = FakeRunner()
    manager = DenseBatchManager(
        runner=runner,
        max_batch=4,
        eos_token_ids=[EOS],
        reasoning=dense.ReasoningMarkers(think_open=THINK, think_close=END_THINK, closing=CLOSING),
    )
    return runner, manager


def test_a_row_over_its_reasoning_budget_gets_the_closing_as_inputs_and_the_other_rows_are_untouched():
    """The fake model counts up from its last token and never closes its reasoning: at the budget
    the manager feeds the closing instead of what it sampled, one token a step, and the model
    goes on from the closing's last token. The other row, with no budget, counts on."""
    runner, m = budgeted_manager()
    m.output_router = out = Collector()
    m.add_request([1, THINK, 10], request_id="cut", max_new_tokens=12, reasoning_budget=3)
    m.add_request([1, THINK, 40], request_id="free", max_new_tokens=12)
    for _ in range(12):
        m.step()
    final = {o.request_id: o.generated_tokens for step in out.steps for o in step}
    assert final["cut"] == [11, 12, 13, 200, END_THINK, 200, 200, 201, 202, 203, 204, 205]
    assert final["free"] == list(range(41, 53))
    assert m.reasoning.cut_at_budget(final["cut"], 3) and not m.reasoning.cut_at_budget(final["free"], 3)
    # Every step was one pass over both rows: the cut row never left the batch.
    assert runner.calls[:12] == [("step", 0, 2)] + [("step", 2, 0)] * 11


def test_a_reasoning_that_closes_at_the_budget_by_itself_or_a_prompt_outside_one_is_not_cut():
    runner, m = budgeted_manager()
    m.output_router = out = Collector()
    # Three reasoning tokens (3, 4, 5), the budget, and the model's own </think> (6) right after.
    m.add_request([THINK, 2], request_id="closes", max_new_tokens=6, reasoning_budget=3)
    m.add_request([THINK, END_THINK, 50], request_id="answering", max_new_tokens=6, reasoning_budget=0)
    for _ in range(6):
        m.step()
    final = {o.request_id: o.generated_tokens for step in out.steps for o in step}
    assert final["closes"] == [3, 4, 5, 6, 7, 8] and not m.reasoning.cut_at_budget(final["closes"], 3)
    assert final["answering"] == [51, 52, 53, 54, 55, 56]
