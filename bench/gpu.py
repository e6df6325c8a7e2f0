"""GPU benchmark for one NVIDIA H200 (runs in under 5 minutes): a random-weight model with
DeepSeek-R1-Distill-Qwen-1.5B geometry in bf16; plain `generate` one request at a time vs our
engine (both backends) at 1, 64 and 256 sessions; tokens/s and time to first token, in one run.

    python bench/gpu.py [--sessions 1,64,256] [--prompt-tokens 128] [--new-tokens 256] [--json]

Needs only torch and transformers (no Django, no database): the engine module is imported
directly. Weights are random, so EOS is disabled and every request generates --new-tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import percentile, print_table  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="1,64,256")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--sequential-requests", type=int, default=3)
    parser.add_argument("--backends", default="paged,dense")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from inference_worker.engine.engine import BatchingEngine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = Qwen2Config(**R1_DISTILL_QWEN_1_5B)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    generation = GenerationConfig(do_sample=False, max_new_tokens=args.new_tokens, eos_token_id=-1, pad_token_id=0)
    model.generation_config = generation
    prompts = [torch.randint(10, 150000, (args.prompt_tokens,)).tolist() for _ in range(max(int(s) for s in args.sessions.split(",")))]
    rows = []

    # Plain generate, one request at a time.
    with torch.no_grad():
        model.generate(torch.tensor([prompts[0]], device=device), generation_config=GenerationConfig(**{**generation.to_dict(), "max_new_tokens": 8}))
        ttfts, tokens = [], 0
        started = time.perf_counter()
        for prompt in prompts[: args.sequential_requests]:
            t0 = time.perf_counter()
            model.generate(torch.tensor([prompt], device=device), generation_config=GenerationConfig(**{**generation.to_dict(), "max_new_tokens": 1}))
            ttfts.append(time.perf_counter() - t0)
            out = model.generate(torch.tensor([prompt], device=device), generation_config=generation)
            tokens += out.shape[1] - len(prompt)
        # The one-token generate is timed separately for TTFT and excluded from throughput.
        elapsed = time.perf_counter() - started - sum(ttfts)
    rows.append({"mode": "generate, one at a time", "sessions": 1, "tokens": tokens, "tokens_per_s": tokens / elapsed, "ttft_p50_ms": percentile(ttfts, 50) * 1000, "ttft_p95_ms": percentile(ttfts, 95) * 1000})

    for backend, sessions in [(b, int(s)) for b in args.backends.split(",") for s in args.sessions.split(",")]:
        engine = BatchingEngine(
            model=model, tokenizer=None, variant="bench", max_batch=sessions, max_new_tokens=args.new_tokens,
            context_tokens=args.prompt_tokens + args.new_tokens, page_size=256, max_batch_tokens=max(2048, sessions * 2),
            generation_config=generation, backend=backend,
        ).start()
        list(engine.submit(prompts[0], max_new_tokens=4).events())  # warm-up
        handles = []
        started = time.perf_counter()
        for prompt in prompts[:sessions]:
            handles.append(engine.submit(prompt))
        for handle in handles:
            for _ in handle.events(poll_s=1.0):
                pass
        elapsed = time.perf_counter() - started
        engine.stop()
        tokens = sum(len(h.generated) for h in handles)
        ttfts = [h.time_to_first_token_s or 0.0 for h in handles]
        rows.append({"mode": f"engine ({backend}), {sessions} sessions", "sessions": sessions, "tokens": tokens, "tokens_per_s": tokens / elapsed, "ttft_p50_ms": percentile(ttfts, 50) * 1000, "ttft_p95_ms": percentile(ttfts, 95) * 1000})

    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__, "rows": rows}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['device']}, torch {report['torch']}, R1-Distill-Qwen-1.5B geometry, random bf16 weights, {args.prompt_tokens}-token prompts, {args.new_tokens} new tokens")
    print_table(["mode", "tokens", "tok/s", "TTFT p50 ms", "TTFT p95 ms"], [[r["mode"], r["tokens"], r["tokens_per_s"], r["ttft_p50_ms"], r["ttft_p95_ms"]] for r in rows])


if __name__ == "__main__":
    main()
