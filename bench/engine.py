"""Engine benchmark: plain one-at-a-time `model.generate` vs our batching engine, side by side in
one run, on the demo model (4-bit GPTQ and FP16 variants).

    .venv/bin/python bench/engine.py [--sessions 1,8,32,64] [--requests-per-session 4] [--stagger 0.5]
                                     [--max-new-tokens 64] [--variants gptq-int4,fp16] [--rounds 1]
                                     [--loop-threads N] [--reasoning-budget N] [--json]

Sessions arrive at staggered times (spread evenly over --stagger seconds); each sends its
requests one after another (the next when its answer is complete). Sequential `generate` is
measured first and again after each round of engine runs (`--rounds`, default 1); each engine
row's speed-up is over the mean of the two baseline runs around it, and with several rounds a
last table gives each configuration's speed-up per round and their median. Greedy decoding, so both ways
produce the same tokens for the same prompts. Reported per configuration: aggregate tokens/s,
time to first token p50/p95 (from the request's arrival, waiting included), time to the first
answer token p50/p95 (after the reasoning: what a customer waits to read; the engine's at the
stream's beat, as the worker stores it), the share of requests whose reasoning the engine cut at
`--reasoning-budget` (the engine rows only; sequential `generate` has no budget), per-session
decode tokens/s, and the speed-up over sequential `generate` measured in the same run.

Both get the same cores: `generate` runs with torch's default threads (one per core) and the
engine's batch loop with as many (`--loop-threads` to change it). Loading, `generate` and the
padded batch each run on a thread of their own that ends with them, so that the batch loop's
OpenMP pool is the process's only one while the engine runs (inference_worker/torch_threads.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from functools import partial

from common import percentile, print_table, setup_django, throughput_row


def prompts_from_corpus(tokenizer, count: int) -> list[list[int]]:
    from inference_worker.demo_model.corpus import heldout_examples
    from inference_worker.prompting import chat_template_ids

    examples = heldout_examples()
    return [chat_template_ids(tokenizer, examples[index % len(examples)].messages) for index in range(count)]


class _FirstToken:
    """A generate() streamer that notes when the first new token arrives, and the first token of
    the answer (the first that shows text after `</think>`)."""

    def __init__(self, tokenizer) -> None:
        self.calls = 0
        self.first_at: float | None = None
        self.answer_at: float | None = None
        self.tokenizer = tokenizer
        self.think_close = tokenizer.convert_tokens_to_ids("</think>")
        self.answering = False

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 1:
            return  # the first put is the prompt
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        for token in value.reshape(-1).tolist():
            if token == self.think_close:
                self.answering = True
            elif self.answering and self.answer_at is None and self.tokenizer.decode([token]).strip():
                self.answer_at = now

    def end(self) -> None:
        pass


def run_sequential(loaded, prompts, *, max_new_tokens: int, arrivals: list[float]) -> dict:
    import torch

    model, config = loaded.model, greedy_config(loaded, max_new_tokens)
    with torch.no_grad():  # warm up outside the measurement, as the engine is
        model.generate(torch.tensor([prompts[0]]), generation_config=greedy_config(loaded, 4))
    ttfts, ttfas, per_request, tokens = [], [], [], 0
    start = time.perf_counter()
    for prompt, arrival in zip(prompts, arrivals, strict=True):
        now = time.perf_counter() - start
        if now < arrival:
            time.sleep(arrival - now)
        streamer = _FirstToken(loaded.tokenizer)
        began = time.perf_counter()
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), generation_config=config, streamer=streamer)
        ended = time.perf_counter()
        generated = out.shape[1] - len(prompt)
        tokens += generated
        ttfts.append((streamer.first_at or ended) - (start + arrival))
        if streamer.answer_at is not None:
            ttfas.append(streamer.answer_at - (start + arrival))
        if generated > 1:
            per_request.append((generated - 1) / (ended - (streamer.first_at or began)))
    elapsed = time.perf_counter() - start
    return summary("sequential generate", 1, len(prompts), tokens, elapsed, ttfts, per_request, ttfas)


def run_padded(loaded, prompts, *, max_new_tokens: int) -> dict:
    """Reference, not a serving mode: one static left-padded batch through `generate` (no request
    can join or leave early). Shows what dense batching reaches on this machine."""
    import torch

    pad = loaded.tokenizer.pad_token_id
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    config = greedy_config(loaded, max_new_tokens)
    with torch.no_grad():
        loaded.model.generate(ids[:2], attention_mask=mask[:2], generation_config=greedy_config(loaded, 4))
        start = time.perf_counter()
        out = loaded.model.generate(ids, attention_mask=mask, generation_config=config)
        elapsed = time.perf_counter() - start
    eos = set(loaded.eos_token_ids)
    tokens = 0
    for row in out[:, length:].tolist():
        for token in row:
            tokens += 1
            if token in eos:
                break
    result = summary(f"padded batch of {len(prompts)} (reference)", len(prompts), len(prompts), tokens, elapsed, [], [])
    result["mean_batch"] = float(len(prompts))
    return result


def greedy_config(loaded, max_new_tokens: int):
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=loaded.eos_token_ids,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )


class _DecodingSink:
    """Does with each update what the worker's sink does, short of publishing it: decodes the
    text so far and splits the reasoning from the answer, and notes when the first answer text
    came (as the worker stores it: at the stream's beat, STREAM_FLUSH_INTERVAL_S)."""

    def __init__(self, tokenizer) -> None:
        from inference_worker.engine.stream import IncrementalDecoder

        self.decoder = IncrementalDecoder(lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
        self.answer_at: float | None = None

    def on_event(self, event) -> None:
        pass

    def on_tokens(self, tokens, *, final: bool) -> None:
        _reasoning, answer = self.decoder.update(tokens, final=final)
        if answer and self.answer_at is None:
            self.answer_at = time.perf_counter()

    def flush(self) -> None:
        pass


def run_engine(
    loaded,
    prompts,
    *,
    sessions: int,
    per_session: int,
    max_new_tokens: int,
    stagger: float,
    backend: str,
    prefill_wait_ms: float,
    flush_interval_s: float = 0.05,
    loop_threads: int = 1,
    reasoning_budget: int | None = None,
) -> dict:
    from inference_worker.engine.engine import BatchingEngine
    from inference_worker.engine.pump import StreamPump

    engine = BatchingEngine(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        variant=loaded.variant,
        max_batch=max(sessions, 1),
        max_new_tokens=max_new_tokens,
        context_tokens=max(len(p) for p in prompts) + max_new_tokens,
        generation_config=greedy_config(loaded, max_new_tokens),
        backend=backend,
        loop_threads=loop_threads,
        prefill_wait_s=prefill_wait_ms / 1000,
    ).start()
    # Warm the engine (first batch builds the cache) outside the measurement.
    list(engine.submit(prompts[0], max_new_tokens=4).events())
    steps_before = len(engine.steps)
    ttfts, ttfas, cut, per_request, tokens = [], [], [], [], 0
    lock = threading.Lock()
    # Streamed as the worker streams: one pump thread for every request, decoding the text of
    # each every flush interval (STREAM_FLUSH_INTERVAL_S); the session threads only wait for
    # their answers' ends.
    pump = StreamPump(interval_s=flush_interval_s)
    start = time.perf_counter()

    def session(index: int) -> None:
        nonlocal tokens
        time.sleep(stagger * index / max(sessions, 1))
        for turn in range(per_session):
            prompt = prompts[(index * per_session + turn) % len(prompts)]
            sink = _DecodingSink(loaded.tokenizer)
            watch = pump.submit(
                engine, prompt, sink=sink, max_new_tokens=max_new_tokens, reasoning_budget=reasoning_budget
            )
            watch.done.wait()
            handle = watch.handle
            with lock:
                tokens += len(handle.generated)
                ttfts.append(handle.time_to_first_token_s or 0.0)
                if sink.answer_at is not None:
                    ttfas.append(sink.answer_at - handle.submitted_at)
                cut.append(
                    engine.reasoning is not None and engine.reasoning.cut_at_budget(handle.generated, reasoning_budget)
                )
                if len(handle.generated) > 1 and handle.first_token_at and handle.finished_at:
                    per_request.append((len(handle.generated) - 1) / (handle.finished_at - handle.first_token_at))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    steps = list(engine.steps)[steps_before:]
    pump.stop()
    engine.stop()
    result = summary(
        f"engine ({backend}), {sessions} sessions",
        sessions,
        sessions * per_session,
        tokens,
        elapsed,
        ttfts,
        per_request,
        ttfas,
    )
    result["cut_percent"] = 100 * sum(cut) / max(1, len(cut))
    result["mean_batch"] = sum(len(s.request_ids) for s in steps) / max(1, len(steps))
    return result


def _sequential(loaded, prompts, arrivals, max_new_tokens: int, label: str) -> dict:
    row = run_sequential(loaded, prompts, max_new_tokens=max_new_tokens, arrivals=arrivals)
    row["mode"] = label
    return row


def print_rounds(rows: list[dict]) -> None:
    """One line per engine configuration: its speed-up in each round, and their median."""
    by_mode: dict[str, list[float]] = {}
    for row in rows:
        if "round" in row:
            by_mode.setdefault(row["mode"].rsplit(" (round", 1)[0], []).append(row["speedup"])
    print()
    print_table(
        ["mode", "x seq by round", "median"],
        [[mode, "  ".join(f"{x:.2f}" for x in ups), statistics.median(ups)] for mode, ups in by_mode.items()],
    )


def summary(name, sessions, requests, tokens, elapsed, ttfts, per_request, ttfas=()) -> dict:
    return {
        **throughput_row(name, sessions, tokens, elapsed, ttfts),
        # To the first answer token (after the reasoning), from the request's arrival.
        "ttfa_p50_ms": percentile(ttfas, 50) * 1000,
        "ttfa_p95_ms": percentile(ttfas, 95) * 1000,
        "requests": requests,
        "seconds": elapsed,
        "session_tokens_per_s": percentile(per_request, 50),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,8,32,64")
    parser.add_argument("--requests-per-session", type=int, default=4)
    parser.add_argument("--sequential-requests", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds over which sessions arrive")
    parser.add_argument("--variants", default="gptq-int4,fp16")
    parser.add_argument("--backends", default="dense,paged", help="engine backends to measure")
    parser.add_argument("--padded-reference", type=int, default=32, help="size of the static padded batch (0: skip)")
    parser.add_argument(
        "--loop-threads",
        type=int,
        default=None,
        help="torch threads of the batch loop (default: as many as plain generate gets, one per core)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the engine runs, each round between two baseline runs"
    )
    parser.add_argument(
        "--reasoning-budget",
        type=int,
        default=None,
        help="the engine closes each request's reasoning after this many tokens (REASONING_BUDGET_TOKENS)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    setup_django()
    import logging

    import torch

    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.WARNING)
    from django.conf import settings

    from inference_worker.engine_factory import settle_gc
    from inference_worker.model_loading import load_variant
    from inference_worker.torch_threads import on_own_thread

    # Plain `generate` (and loading) run with torch's default threads, each on a thread of its
    # own that ends with it; the main thread runs no torch in parallel, so the batch loop's
    # OpenMP pool is the only one while the engine runs (see inference_worker/torch_threads.py).
    baseline_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # The engine gets the cores plain generate gets (on a worker host of its own); the product's
    # worker on this 2-core machine shares them with the web, Redis and PostgreSQL and runs its
    # loop on ENGINE_LOOP_THREADS (1 by default, see docs/benchmarks.md).
    loop_threads = args.loop_threads if args.loop_threads is not None else baseline_threads
    report = {
        "torch_threads": baseline_threads,
        "loop_threads": loop_threads,
        "max_new_tokens": args.max_new_tokens,
        "reasoning_budget": args.reasoning_budget,
        "variants": {},
    }

    def sequential(*a, **k):
        return on_own_thread(partial(_sequential, *a, **k), threads=baseline_threads)

    for variant in args.variants.split(","):
        config = settings.MODEL_VARIANTS[variant]
        loaded = on_own_thread(
            partial(
                load_variant,
                variant=variant,
                path=config["path"],
                quantized=config["quantized"],
                device="cpu",
                gptq_cpu_dtype_setting=settings.GPTQ_CPU_DTYPE,
            ),
            threads=baseline_threads,
        )
        settle_gc()  # as the worker's engine process does once its model is loaded
        prompts = prompts_from_corpus(loaded.tokenizer, 256)
        arrivals = [args.stagger * i / args.sequential_requests for i in range(args.sequential_requests)]
        baseline_prompts = prompts[: args.sequential_requests]

        # The baseline is measured before and after each round of engine runs (a shared machine's
        # speed drifts within minutes); each engine row's speed-up is over the mean of
        # the two baselines around it.
        rows = [sequential(loaded, baseline_prompts, arrivals, args.max_new_tokens, "sequential generate")]
        for round_index in range(args.rounds):
            engine_rows = []
            for backend in args.backends.split(","):
                for sessions in [int(s) for s in args.sessions.split(",")]:
                    engine_rows.append(
                        run_engine(
                            loaded,
                            prompts,
                            sessions=sessions,
                            per_session=args.requests_per_session,
                            max_new_tokens=args.max_new_tokens,
                            stagger=args.stagger,
                            backend=backend,
                            prefill_wait_ms=settings.ENGINE_PREFILL_WAIT_MS,
                            loop_threads=loop_threads,
                            flush_interval_s=settings.STREAM_FLUSH_INTERVAL_S,
                            reasoning_budget=args.reasoning_budget,
                        )
                    )
            if args.padded_reference and round_index == 0:
                engine_rows.append(
                    on_own_thread(
                        partial(
                            run_padded, loaded, prompts[: args.padded_reference], max_new_tokens=args.max_new_tokens
                        ),
                        threads=baseline_threads,
                    )
                )
            before = rows[-1]
            after = sequential(loaded, baseline_prompts, arrivals, args.max_new_tokens, "sequential generate, again")
            baseline = (before["tokens_per_s"] + after["tokens_per_s"]) / 2
            for row in engine_rows:
                row["speedup"] = row["tokens_per_s"] / baseline
                row["round"] = round_index + 1
                if args.rounds > 1:
                    row["mode"] += f" (round {round_index + 1})"
            rows += [*engine_rows, after]
        baselines = [row for row in rows if row["mode"].startswith("sequential generate")]
        for index, row in enumerate(baselines):  # each baseline run against its neighbours' mean
            neighbours = [b["tokens_per_s"] for b in baselines[max(0, index - 1) : index + 2]]
            row["speedup"] = row["tokens_per_s"] / (sum(neighbours) / len(neighbours))
        report["variants"][variant] = rows
        report.setdefault("precision", {})[variant] = loaded.precision
        if not args.json:
            print(
                f"\n{variant}  ({config['path']}, {loaded.precision}, {report['torch_threads']} torch threads for generate,"
                f" {loop_threads} for the engine's loop,"
                f" greedy, {args.max_new_tokens} new tokens max,"
                f" reasoning budget {args.reasoning_budget if args.reasoning_budget is not None else 'none'})"
            )
            print_table(
                [
                    "mode",
                    "requests",
                    "tokens",
                    "tok/s",
                    "x seq",
                    "TTFT p50 ms",
                    "TTFT p95 ms",
                    "answer p50 ms",
                    "answer p95 ms",
                    "cut %",
                    "session tok/s",
                    "mean batch",
                ],
                [
                    [
                        r["mode"],
                        r["requests"],
                        r["tokens"],
                        r["tokens_per_s"],
                        r["speedup"],
                        r["ttft_p50_ms"],
                        r["ttft_p95_ms"],
                        r["ttfa_p50_ms"],
                        r["ttfa_p95_ms"],
                        r.get("cut_percent", float("nan")),
                        r["session_tokens_per_s"],
                        r.get("mean_batch", 1.0),
                    ]
                    for r in rows
                ],
            )
            if args.rounds > 1:
                print_rounds(rows)
        del loaded
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
