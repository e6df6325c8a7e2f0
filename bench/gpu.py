"""GPU benchmark for one NVIDIA H200 (runs in under 5 minutes): a random-weight model with
DeepSeek-R1-Distill-Qwen-1.5B geometry in bf16; plain `generate` one request at a time vs our
engine at 1, 64 and 256 sessions; tokens/s and time to first token, in one run.

    python bench/gpu.py [--sessions 1,64,256] [--variants dense,paged-graphs,...]
                        [--prompt-tokens 128] [--new-tokens 256] [--row-seconds 25] [--json]
                        [--profile] [--tiny | --geometry attention]

Variants:
- `dense`: our batch loop over the slot cache, decode steps replayed from CUDA graphs
  (`slot_runner.py`; what the worker runs on CUDA, ENGINE_BACKEND=auto or dense);
- `dense-eager`: the same without CUDA graphs;
- `dense-padded`: our batch loop over the left-padded cache (`dense_runner.py`, the CPU's);
- `paged-graphs`: transformers' continuous batching with CUDA graphs and async batching (what
  the worker runs on CUDA with ENGINE_BACKEND=paged, ENGINE_CUDA_GRAPHS);
- `paged`: the same without them (transformers' default when attention takes a mask);
- `reasoning`: long reasoning, as a real R1 checkpoint writes it: each request "reasons"
  --reasoning-tokens (1,024) inside `<think>`, then answers --answer-tokens (128), on the dense
  slot backend; the same with the engine's reasoning budget (--reasoning-budget, 256) closing
  the reasoning early. Random weights never close a reasoning by themselves, so the engine's
  budget closes both: at 1,024 (the model's own length, "no budget") and at the budget. Rows
  report the time to the first answer token (after the closing) p50/p95 beside the first token;
- `worker`: what the worker itself runs, at the smallest and the largest session count: the
  model saved to disk with a small tokenizer and loaded by the worker's own code in an engine
  process of its own (`inference_worker/engine_process.py`: its `RemoteEngine`, the worker's
  settings' defaults, on CUDA in the checkpoint's bf16), requests and tokens crossing its pipe;
  `--worker-backend` picks the backend (default `auto`, the worker's: dense, with its slot cache
  and CUDA graphs on CUDA);
- `worker-gptq-KERNEL`: the same with the model saved as a 4-bit GPTQ checkpoint (every decoder
  linear layer rounded to 4 bits in groups of 128, `save_gptq_rtn`) and served as the worker
  serves its 4-bit variant, GPTQ_CUDA_KERNEL=KERNEL (`auto`: gptqmodel's choice; `marlin`,
  `exllama_v2`, `machete`, `triton`, `torch`); the note names the kernel class that ran and the
  load's time (the first build of a compiled kernel included).
Each runs with PyTorch's cuDNN attention off, as the worker runs (CUDA_SDPA_CUDNN); a `-cudnn`
suffix runs it with cuDNN allowed, PyTorch's default. `paged`, no longer what the worker runs,
is left out unless named. All sessions are submitted at once; a row that runs past
--row-seconds is cut there and marked so (its tokens/s counts what it generated until then), and
rows that would start past --budget-seconds (240) are skipped, so the whole run stays under five
minutes. On CUDA the run first checks that graph replays give the eager slot runner's greedy
tokens and that the runner kept its graphs (`graph_check`); a `dense` row notes how many graphs
it captured, or that it turned them off and ran eagerly.
`--profile` adds the time of a decode step at the largest session count for the left-padded
runner and the slot runner (eager, and with graphs on CUDA), and torch.profiler's top operations
for ten left-padded steps. `--tiny` shrinks the model to run on a CPU (a smoke test of the
script, not a measurement). `--geometry attention` keeps the 1.5B model's attention (12 heads,
2 key-value heads of 128) in one layer with a small MLP and vocabulary, so attention is most of
a step: on a CPU it shows how each backend's attention grows with the sessions (transformers'
paged batching over SDPA attends every token over the whole batch's keys).

Needs only torch and transformers (no Django, no database): the engine is imported directly.
Weights are random, so EOS is disabled and every request generates --new-tokens.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile, print_table, throughput_row  # noqa: E402

R1_DISTILL_QWEN_1_5B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)
TINY = dict(
    R1_DISTILL_QWEN_1_5B,
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
)
ATTENTION = dict(R1_DISTILL_QWEN_1_5B, vocab_size=1024, intermediate_size=256, num_hidden_layers=1)
GEOMETRIES = {"r1-1.5b": R1_DISTILL_QWEN_1_5B, "tiny": TINY, "attention": ATTENTION}
GEOMETRY_NAMES = {
    "r1-1.5b": "R1-Distill-Qwen-1.5B",
    "tiny": "toy",
    "attention": "one-layer R1-Distill-Qwen-1.5B attention",
}

GRAPHS = {"use_cuda_graph": True, "use_async_batching": True}
# name -> (engine backend, further BatchingEngine arguments)
VARIANTS = {
    "dense": ("dense", {"dense_cache": "slots", "cuda_graphs": True}),
    "dense-eager": ("dense", {"dense_cache": "slots", "cuda_graphs": False}),
    "dense-padded": ("dense", {"dense_cache": "padded"}),
    "paged-graphs": ("paged", {"paged_options": GRAPHS}),
    "paged": ("paged", {}),
}


def cudnn_attention(enabled: bool) -> None:
    """PyTorch's switch for cuDNN attention (process-wide; a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(enabled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,64,256")
    parser.add_argument(
        "--variants",
        default="dense,paged-graphs,worker,dense-eager,dense-padded,dense-padded-cudnn,paged-graphs-cudnn",
    )
    parser.add_argument("--worker-backend", default="auto", choices=["auto", "dense", "paged"])
    parser.add_argument("--reasoning-tokens", type=int, default=1024, help="`reasoning`: the model's own reasoning")
    parser.add_argument("--answer-tokens", type=int, default=128, help="`reasoning`: the answer after it")
    parser.add_argument("--reasoning-budget", type=int, default=256, help="`reasoning`: the engine's budget")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--sequential-requests", type=int, default=2)
    parser.add_argument("--row-seconds", type=float, default=25.0, help="cut a row that runs longer than this")
    parser.add_argument(
        "--budget-seconds", type=float, default=240.0, help="rows (and --profile) that would start later are skipped"
    )
    parser.add_argument("--profile", action="store_true", help="torch.profiler over dense decode steps")
    model_size = parser.add_mutually_exclusive_group()
    model_size.add_argument("--geometry", choices=sorted(GEOMETRIES), default="r1-1.5b")
    model_size.add_argument(
        "--tiny", dest="geometry", action="store_const", const="tiny", help="a toy model, to check the script on a CPU"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", help="also write the report here as JSON, after every row")
    args = parser.parse_args()
    begun = time.perf_counter()

    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = Qwen2Config(**GEOMETRIES[args.geometry])
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    generation = GenerationConfig(do_sample=False, max_new_tokens=args.new_tokens, eos_token_id=-1, pad_token_id=0)
    model.generation_config = generation
    # The worker's engine process tunes the garbage collector so once its model is loaded.
    from inference_worker.engine_factory import settle_gc

    settle_gc()
    sessions_list = [int(s) for s in args.sessions.split(",")]
    prompts = [
        torch.randint(10, config.vocab_size - 10, (args.prompt_tokens,)).tolist() for _ in range(max(sessions_list))
    ]
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "geometry": args.geometry,
        "model": {
            **{
                key: getattr(config, key)
                for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
            },
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        },
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "rows": [],
    }

    def add(row: dict) -> None:
        report["rows"].append(row)
        if not args.json:
            print(json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))

    # One at a time, attention takes no mask, so PyTorch picks flash attention whatever the
    # cuDNN switch says: `generate` runs once, as the worker would (cuDNN off).
    cudnn_attention(False)
    add(sequential(model, generation, prompts[: args.sequential_requests], device))
    if device == "cuda":  # correctness first: the graphs' tokens against the eager ones
        try:
            report["graph_check"] = graph_check(model, generation, prompts[:16])
        except Exception as exc:  # noqa: BLE001 - the rows after it still run, each reporting its own failure
            report["graph_check"] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
        if not args.json:
            print(json.dumps({"graph_check": report["graph_check"]}), flush=True)
    saved: dict[str, str] = {}
    for name in args.variants.split(","):
        if name == "reasoning":
            for sessions in sessions_list:
                for budget in (args.reasoning_tokens, args.reasoning_budget):
                    if time.perf_counter() - begun > args.budget_seconds:
                        mode = reasoning_mode(sessions, budget, args)
                        add(
                            {
                                **throughput_row(mode, sessions, 0, None, []),
                                "note": f"skipped: past {args.budget_seconds:.0f} s",
                            }
                        )
                        continue
                    add(reasoning_row(model, generation, prompts[:sessions], budget, args))
            continue
        if name == "worker" or name.startswith("worker-gptq-"):
            kernel = name.removeprefix("worker-gptq-") if name != "worker" else None
            for sessions in sorted({min(sessions_list), max(sessions_list)}):
                if time.perf_counter() - begun > args.budget_seconds:
                    skipped = f"skipped: past {args.budget_seconds:.0f} s"
                    add({**throughput_row(worker_mode(args, kernel, sessions), sessions, 0, None, []), "note": skipped})
                else:
                    add(worker_row(model, prompts[:sessions], args, device, saved, kernel=kernel))
            continue
        base = name.removesuffix("-cudnn")
        if base in ("paged-graphs", "dense-eager") and device != "cuda":
            continue  # CUDA graphs and async batching need a GPU (without one, dense is eager)
        if name.endswith("-cudnn") and device != "cuda":
            continue
        cudnn_attention(name.endswith("-cudnn"))
        for sessions in sessions_list:
            if time.perf_counter() - begun > args.budget_seconds:
                skipped = f"skipped: past {args.budget_seconds:.0f} s"
                add({**throughput_row(f"engine ({name}), {sessions} sessions", sessions, 0, None, []), "note": skipped})
                continue
            add(engine_row(model, generation, prompts[:sessions], name, args))
    for folder in saved.values():
        shutil.rmtree(folder, ignore_errors=True)
    cudnn_attention(False)
    if args.profile and time.perf_counter() - begun <= args.budget_seconds:
        report["profile"] = profile_dense(model, generation, prompts[: max(sessions_list)])

    if args.json:
        print(json.dumps(report))
        return
    print(
        f"\n{report['device']}, torch {report['torch']}, transformers {report['transformers']}, "
        f"{GEOMETRY_NAMES[args.geometry]} geometry, random bf16 weights, "
        f"{args.prompt_tokens}-token prompts, {args.new_tokens} new tokens"
    )
    print_table(
        [
            "mode",
            "tokens",
            "tok/s",
            "TTFT p50 ms",
            "TTFT p95 ms",
            "answer p50 ms",
            "answer p95 ms",
            "step p50 ms",
            "per-session tok/s",
            "note",
        ],
        [
            [
                r["mode"],
                r["tokens"],
                r["tokens_per_s"],
                r["ttft_p50_ms"],
                r["ttft_p95_ms"],
                r.get("answer_p50_ms", float("nan")),
                r.get("answer_p95_ms", float("nan")),
                r.get("step_p50_ms", float("nan")),
                r.get("per_session_tokens_per_s", float("nan")),
                r.get("note", ""),
            ]
            for r in report["rows"]
        ],
    )
    if "profile" in report:
        print("\n" + report["profile"])


def sequential(model, generation, prompts, device) -> dict:
    """Plain `generate`, one request at a time. A one-token `generate` of each prompt is timed
    separately for time to first token and left out of the throughput."""
    import torch
    from transformers import GenerationConfig

    one = GenerationConfig(**{**generation.to_dict(), "max_new_tokens": 1})
    with torch.no_grad():
        model.generate(
            torch.tensor([prompts[0]], device=device),
            generation_config=GenerationConfig(**{**generation.to_dict(), "max_new_tokens": 8}),
        )
        ttfts, tokens, elapsed = [], 0, 0.0
        for prompt in prompts:
            t0 = time.perf_counter()
            model.generate(torch.tensor([prompt], device=device), generation_config=one)
            ttfts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = model.generate(torch.tensor([prompt], device=device), generation_config=generation)
            elapsed += time.perf_counter() - t0
            tokens += out.shape[1] - len(prompt)
    return {
        **throughput_row("generate, one at a time", 1, tokens, elapsed, ttfts),
        "step_p50_ms": elapsed / tokens * 1000,
    }


def engine_row(model, generation, prompts, name, args) -> dict:
    from inference_worker.engine.engine import BatchingEngine

    backend, engine_args = VARIANTS[name.removesuffix("-cudnn")]
    sessions = len(prompts)
    mode = f"engine ({name}), {sessions} sessions"
    engine = None
    try:
        engine = BatchingEngine(
            model=model,
            tokenizer=None,
            variant="bench",
            max_batch=sessions,
            max_new_tokens=args.new_tokens,
            context_tokens=args.prompt_tokens + args.new_tokens,
            page_size=256,
            max_batch_tokens=max(2048, sessions * 2),
            generation_config=generation,
            backend=backend,
            **engine_args,
        ).start()
        warm = engine.submit(prompts[0], max_new_tokens=4)
        give_up = time.perf_counter() + args.row_seconds
        for _event in warm.events(poll_s=0.5):
            if time.perf_counter() > give_up:
                raise TimeoutError(f"the warm-up request did not finish in {args.row_seconds:.0f} s")
        warm_steps = len(engine.steps)
        handles = []
        started = time.perf_counter()
        deadline = started + args.row_seconds
        for prompt in prompts:
            handles.append(engine.submit(prompt))
        cut = False
        for handle in handles:
            for _ in handle.events(poll_s=0.5):
                if time.perf_counter() > deadline:
                    cut = True
                    break
            if cut:
                break
        elapsed = time.perf_counter() - started
        steps = [s.at for s in list(engine.steps)[warm_steps:]]
        graphs = graphs_note(engine, engine_args)
    except Exception as exc:  # noqa: BLE001 - one variant failing must not lose the others' rows
        return {**throughput_row(mode, sessions, 0, None, []), "note": f"failed: {type(exc).__name__}: {exc}"[:300]}
    finally:
        if engine is not None:
            engine.stop()  # its cache goes with it, whatever happened: the next rows need the memory
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    row = handles_row(mode, handles, elapsed, cut, args)
    if graphs:
        row["note"] = "; ".join(filter(None, [row.get("note"), graphs]))
    return {**row, "step_p50_ms": statistics.median(gaps) * 1000 if gaps else float("nan")}


# Token ids standing for `<think>`, `</think>` and the closing the engine feeds (`\n</think>\n\n`
# is three tokens in R1-Distill's tokenizer: "\n", "</think>", "\n\n"), in a random-weight model.
THINK_OPEN, THINK_CLOSE, NEWLINE, DOUBLE_NEWLINE = 3, 4, 5, 6


def reasoning_mode(sessions: int, budget: int, args) -> str:
    own = budget >= args.reasoning_tokens
    what = f"reasons {args.reasoning_tokens}" if own else f"budget {budget} of {args.reasoning_tokens}"
    return f"reasoning ({what}), {sessions} sessions"


def reasoning_row(model, generation, prompts, budget: int, args) -> dict:
    """Requests that reason inside `<think>` until the engine closes the reasoning at `budget`
    tokens, then answer --answer-tokens; the time to the first answer token (the first token after
    the closing) from each request's submission, beside the first token's."""
    from inference_worker.engine.dense import ReasoningMarkers
    from inference_worker.engine.engine import BatchingEngine

    sessions = len(prompts)
    mode = reasoning_mode(sessions, budget, args)
    closing = (NEWLINE, THINK_CLOSE, DOUBLE_NEWLINE)
    new_tokens = budget + len(closing) + args.answer_tokens
    prompts = [[*prompt[:-1], THINK_OPEN] for prompt in prompts]  # R1's prompt ends inside `<think>`
    answer_at: dict[int, float] = {}
    counts = [0] * sessions

    def listener(index: int):
        def on_event(event) -> None:
            if event.kind == "tokens":
                counts[index] += len(event.tokens)
                if index not in answer_at and counts[index] > budget + len(closing):
                    answer_at[index] = time.perf_counter()

        return on_event

    engine = None
    try:
        engine = BatchingEngine(
            model=model,
            tokenizer=None,
            variant="bench",
            max_batch=sessions,
            max_new_tokens=new_tokens,
            context_tokens=args.prompt_tokens + new_tokens,
            generation_config=generation,
            backend="dense",
            dense_cache="slots",
            cuda_graphs=True,
        )
        engine.reasoning = ReasoningMarkers(think_open=THINK_OPEN, think_close=THINK_CLOSE, closing=closing)
        engine.start()
        warm = engine.submit(prompts[0], max_new_tokens=4)
        for _event in warm.events(poll_s=0.5):
            pass
        started = time.perf_counter()
        deadline = started + args.row_seconds
        handles = [
            engine.submit(prompt, max_new_tokens=new_tokens, reasoning_budget=budget, listener=listener(i))
            for i, prompt in enumerate(prompts)
        ]
        cut = False
        while not all(h.finished_at for h in handles):
            if time.perf_counter() > deadline:
                cut = True
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - one row failing must not lose the others
        return {**throughput_row(mode, sessions, 0, None, []), "note": f"failed: {type(exc).__name__}: {exc}"[:300]}
    finally:
        if engine is not None:
            engine.stop()
    row = handles_row(mode, handles, elapsed, cut, args)
    waits = [answer_at[i] - handles[i].submitted_at for i in sorted(answer_at)]
    closed = sum(tuple(h.generated[budget : budget + len(closing)]) == closing for h in handles)
    row["answer_p50_ms"] = percentile(waits, 50) * 1000
    row["answer_p95_ms"] = percentile(waits, 95) * 1000
    row["note"] = "; ".join(filter(None, [row.get("note"), f"{closed}/{sessions} closed at {budget}"]))
    return row


def graphs_note(engine, engine_args: dict) -> str:
    """For a slot runner asked for CUDA graphs on CUDA: how many it captured, or that it turned
    them off (a graph that disagreed with the eager pass, or could not be captured) and the row
    ran eagerly."""
    runner = getattr(engine._manager, "runner", None)
    if not engine_args.get("cuda_graphs") or not hasattr(runner, "graphs_captured") or runner.device.type != "cuda":
        return ""
    return f"{runner.graphs_captured} graphs" if runner.graphs else "graphs turned off, ran eagerly (see the log)"


def handles_row(mode: str, handles, elapsed: float, cut: bool, args) -> dict:
    """A row from the requests' handles: tokens/s, time to first token, per-session tokens/s
    (each finished request's tokens over its time from first token to end), and the cut note."""
    ttfts = [h.time_to_first_token_s for h in handles if h.time_to_first_token_s is not None]
    rates = [
        len(h.generated) / (h.finished_at - h.first_token_at)
        for h in handles
        if h.finished_at and h.first_token_at and h.finished_at > h.first_token_at and h.status == "finished"
    ]
    return {
        **throughput_row(mode, len(handles), sum(len(h.generated) for h in handles), elapsed, ttfts),
        "per_session_tokens_per_s": statistics.median(rates) if rates else float("nan"),
        "note": f"cut at {args.row_seconds:.0f} s" if cut else "",
    }


def worker_mode(args, kernel: str | None, sessions: int) -> str:
    what = f"4-bit GPTQ, kernel {kernel}" if kernel else "unquantized"
    return f"worker ({args.worker_backend}, {what}), {sessions} sessions"


def worker_row(model, prompts, args, device: str, saved: dict[str, str], kernel: str | None = None) -> dict:
    """The worker's own path: `RemoteEngine` over the model saved to disk (once, into `saved`):
    as it is, or (`kernel`: GPTQ_CUDA_KERNEL) as a 4-bit GPTQ checkpoint (`save_gptq_rtn`). The
    row's note says what the engine process loaded (its GPTQ kernel's class) and how long the
    load took (a compiled kernel's first build included)."""
    import tempfile

    from inference_worker.engine_factory import EngineSpec
    from inference_worker.engine_process import RemoteEngine

    sessions = len(prompts)
    mode = worker_mode(args, kernel, sessions)
    key = "gptq" if kernel else "path"
    engine = None
    try:
        if key not in saved:
            folder = tempfile.mkdtemp(prefix="gpu-bench-")
            if kernel:
                widths = (model.config.hidden_size, model.config.intermediate_size)
                saved[key] = save_gptq_rtn(model, folder, group_size=128 if all(w % 128 == 0 for w in widths) else 32)
            else:
                saved[key] = save_with_tokenizer(model, folder)
        loading = time.perf_counter()
        engine = RemoteEngine(
            EngineSpec(
                variant="bench",
                path=saved[key],
                quantized=bool(kernel),
                gptq_cuda_kernel=kernel or "auto",
                device=device,
                load_threads=4,
                max_batch=sessions,
                max_new_tokens=args.new_tokens,
                context_tokens=args.prompt_tokens + args.new_tokens,
                backend=args.worker_backend,
                temperature=0.0,
            )
        ).start()
        loaded = f"{engine.info.get('precision', '?')}, loaded in {time.perf_counter() - loading:.0f} s"
        give_up = time.perf_counter() + args.row_seconds
        warm = _Ends()
        engine.submit(prompts[0], max_new_tokens=4, listener=warm)
        if not warm.done.wait(max(0.0, give_up - time.perf_counter())):
            raise TimeoutError(f"the warm-up request did not finish in {args.row_seconds:.0f} s")
        ends = _Ends(expected=sessions)
        started = time.perf_counter()
        handles = [engine.submit(prompt, listener=ends) for prompt in prompts]
        cut = not ends.done.wait(args.row_seconds)
        elapsed = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - one variant failing must not lose the others' rows
        return {**throughput_row(mode, sessions, 0, None, []), "note": f"failed: {type(exc).__name__}: {exc}"[:300]}
    finally:
        if engine is not None:
            engine.stop()
    row = handles_row(mode, handles, elapsed, cut, args)
    return {**row, "note": "; ".join(filter(None, [row.get("note"), loaded]))}


class _Ends:
    """A listener that counts requests ending; `done` is set when `expected` have ended."""

    def __init__(self, expected: int = 1) -> None:
        import threading

        self.expected, self.ended = expected, 0
        self.done = threading.Event()

    def __call__(self, event) -> None:
        if event.kind in ("finished", "failed", "cancelled"):
            self.ended += 1  # one reader thread calls this: no lock needed
            if self.ended >= self.expected:
                self.done.set()


def save_gptq_rtn(model, folder: str, *, group_size: int = 128) -> str:
    """A 4-bit GPTQ checkpoint of `model` in the format GPTQ tools write (gptqmodel's
    `checkpoint_format: gptq`), with a small tokenizer: every linear layer of the decoder in
    4 bits, the embeddings, norms and output head in the model's dtype. The weights are rounded
    to nearest (`rtn_ints`), not calibrated: GPTQ proper needs calibration text and minutes, and
    a kernel's speed does not depend on which integers it multiplies. `tests/bench` checks the
    packing through the worker's own loading code against `rtn_weight`."""
    import torch
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}.":
            state.pop(f"{name}.weight")
            state.update({f"{name}.{key}": value for key, value in rtn_pack(module.weight, group_size).items()})
    model.config.save_pretrained(folder)
    config = json.loads((Path(folder) / "config.json").read_text())
    config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")  # as save_pretrained writes it
    config["quantization_config"] = {
        "bits": 4,
        "group_size": group_size,
        "desc_act": False,
        "sym": True,
        "lm_head": False,
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
        "pack_dtype": "int32",
    }
    (Path(folder) / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(folder)
    save_file(state, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
    return save_tokenizer(folder)


def rtn_ints(weight, group_size: int):
    """A linear layer's [out, in] weight rounded to 4 bits per group of `group_size` inputs, on
    GPTQ's symmetric grid: scale = the group's largest magnitude * 2 / 15 (as fp16 stores it),
    zero point 8. Returns the integers [out, in] (0..15) and the scales [out, groups]."""
    import torch

    out_features, in_features = weight.shape
    grouped = weight.detach().float().cpu().reshape(out_features, in_features // group_size, group_size)
    scales = (grouped.abs().amax(dim=2) * 2 / 15).clamp(min=1e-6).half().float()
    ints = (grouped / scales[..., None]).round().add(8).clamp(0, 15).to(torch.int64)
    return ints.reshape(out_features, in_features), scales


def rtn_weight(weight, group_size: int):
    """The weight a `rtn_pack`ed layer computes with: (integer - zero point) * scale."""
    ints, scales = rtn_ints(weight, group_size)
    return (ints - 8).float() * scales.repeat_interleave(group_size, dim=1)


def rtn_pack(weight, group_size: int) -> dict:
    """`rtn_ints` packed as a GPTQ v1 checkpoint stores a layer: qweight [in / 8, out] int32
    (eight 4-bit values down the input dimension, the first in the lowest bits), qzeros
    [groups, out / 8] int32 (the zero point minus one, eight along the output dimension), scales
    [groups, out] fp16, g_idx [in] int32 (each input's group: no act-order)."""
    import numpy as np
    import torch

    ints, scales = rtn_ints(weight, group_size)
    out_features, in_features = ints.shape
    qweight = _pack_nibbles(ints.t().numpy().astype(np.uint32))  # [in, out] -> [in / 8, out]
    zeros = np.full((out_features, scales.shape[1]), 8 - 1, dtype=np.uint32)
    qzeros = np.ascontiguousarray(_pack_nibbles(zeros).T)  # [out, groups] -> [out / 8, groups] -> [groups, out / 8]
    return {
        "qweight": torch.from_numpy(qweight.view(np.int32)),
        "qzeros": torch.from_numpy(qzeros.view(np.int32)),
        "scales": scales.t().contiguous().half(),
        "g_idx": torch.arange(in_features, dtype=torch.int32) // group_size,
    }


def _pack_nibbles(values):
    """Eight 4-bit values down the first axis of a uint32 array into each uint32, the first in
    the lowest bits (GPTQ v1's qweight and qzeros layout)."""
    import numpy as np

    packed = np.zeros((values.shape[0] // 8, *values.shape[1:]), dtype=np.uint32)
    for j in range(8):
        packed |= values[j::8] << np.uint32(4 * j)
    return packed


def save_with_tokenizer(model, folder: str) -> str:
    """The model's weights and config, and a small tokenizer built by the demo model's own code
    (the worker's loading code wants one; the benchmark's prompts are token ids), as a model
    folder the worker can load."""
    model.save_pretrained(folder)
    return save_tokenizer(folder)


def save_tokenizer(folder: str) -> str:
    """A small tokenizer built by the demo model's own code, into `folder`."""
    from inference_worker.demo_model.tokenizer import train_tokenizer

    texts = ["Where is my order?", "How do I return an item?", "hello, thank you"] * 4
    train_tokenizer(texts=texts, vocab_size=300).save_pretrained(folder)
    return folder


def graph_check(model, generation, prompts) -> dict:
    """The slot runner's greedy tokens with decode steps replayed from CUDA graphs against the
    same runner run eagerly, requests joining four at a time and leaving as they finish; and
    whether the graphs stayed on (the runner turns them off, and decodes eagerly, when a new
    graph's tokens differ from the eager pass's or it cannot be captured: the log says which)."""
    from inference_worker.engine.slot_runner import SlotModelRunner

    def run(graphs: bool) -> tuple[list[list[int]], SlotModelRunner]:
        runner = SlotModelRunner(
            model=model, generation_config=generation, pad_token_id=0, slots=len(prompts), columns=512, graphs=graphs
        )
        generated: dict[int, list[int]] = {}
        rows: list[int] = []
        waiting = list(range(len(prompts)))
        step = 0
        while waiting or rows:
            joining = waiting[: 4 if step % 5 == 0 else 0]
            waiting = waiting[len(joining) :]
            next_tokens, first = runner.step([generated[i][-1] for i in rows], [prompts[i] for i in joining])
            for i, token in zip([*rows, *joining], [*next_tokens, *first], strict=True):
                generated.setdefault(i, []).append(token)
            rows += joining
            kept = [k for k, i in enumerate(rows) if len(generated[i]) < 24 + i]
            if len(kept) != len(rows):
                rows = [rows[k] for k in runner.keep(kept)]
            step += 1
        return [generated[i] for i in range(len(prompts))], runner

    replayed, runner = run(True)
    return {
        "tokens_equal_eager": replayed == run(False)[0],
        "graphs_kept": runner.graphs,
        "graphs_captured": runner.graphs_captured,
    }


def profile_dense(model, generation, prompts) -> str:
    """Decode steps of the runners with every prompt in the batch (cuDNN attention off): the
    wall time of a step for the left-padded runner, the slot runner eager and the slot runner
    replaying CUDA graphs (on CUDA), then torch.profiler over ten left-padded steps: where its
    time goes (CPU-side launches against device kernels)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from inference_worker.engine.dense_runner import DenseModelRunner
    from inference_worker.engine.slot_runner import SlotModelRunner

    def timed(runner) -> tuple[float, list[int]]:
        _, last = runner.step([], prompts)
        for _ in range(5):  # on CUDA with graphs: the captures happen here
            last, _ = runner.step(last, [])
        t0 = time.perf_counter()
        for _ in range(10):
            last, _ = runner.step(last, [])
        return (time.perf_counter() - t0) / 10, last

    lines = []
    cuda = torch.cuda.is_available()
    for name, graphs in [("slot runner, eager", False)] + ([("slot runner, CUDA graphs", True)] if cuda else []):
        slots = SlotModelRunner(
            model=model, generation_config=generation, pad_token_id=0, slots=len(prompts), columns=512, graphs=graphs
        )
        wall, _ = timed(slots)
        lines.append(f"{name}: decode step at batch {len(prompts)}: {wall * 1000:.1f} ms wall (mean of 10)")
        del slots
    runner = DenseModelRunner(model=model, generation_config=generation, pad_token_id=0)
    wall, last = timed(runner)
    lines.append(f"left-padded runner: decode step at batch {len(prompts)}: {wall * 1000:.1f} ms wall (mean of 10)")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(10):
            last, _ = runner.step(last, [])
    device_sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    return (
        "\n".join(lines)
        + "\nleft-padded runner, ten decode steps under torch.profiler:\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=18)
        + "\n"
        + averages.table(sort_by=device_sort, row_limit=12)
    )


if __name__ == "__main__":
    main()
