"""The answer's time to first token with and without the help center's passages, side by side in
one run, on the demo model (both variants):

    .venv/bin/python bench/grounding.py [--requests 40] [--rounds 3] [--variants gptq-int4,fp16] [--json]

For each held-out question the prompt is built as the worker builds it (`inference_worker.
grounding.ground_turns` then `build_prompt_ids`): once as the conversation alone (no knowledge
base), once with the passages retrieval finds for it (the demo articles in `text.MemoryIndex`, the
same terms, relevance and cut-off as the database backends; the database's own search time is
`bench/retrieval.py`'s). Each request is one `generate` of a single token (the prefill and the
first token: what the customer waits for before anything moves), the two kinds alternating, each
question in both, `--rounds` times. Prints prompt tokens and time to first token p50/p95 per kind,
and the ratio grounded / plain measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

from common import percentile, print_table, setup_django


def _first_token(loaded, ids: list[int]) -> float:
    import torch

    began = time.perf_counter()
    with torch.no_grad():
        loaded.model.generate(
            torch.tensor([ids]), max_new_tokens=1, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id
        )
    return (time.perf_counter() - began) * 1000


def _measure(loaded, prompts: dict[str, list[list[int]]], rounds: int) -> dict[str, list[float]]:
    """Each question's two prompts one after the other, the order alternating."""
    _first_token(loaded, prompts["plain"][0])  # warm up
    times: dict[str, list[float]] = {"plain": [], "grounded": []}
    for _ in range(rounds):
        for i in range(len(prompts["plain"])):
            for kind in ("plain", "grounded") if i % 2 == 0 else ("grounded", "plain"):
                times[kind].append(_first_token(loaded, prompts[kind][i]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="held-out questions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="gptq-int4,fp16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup_django()

    import torch
    from django.conf import settings

    from chatbot.knowledge import text as kb
    from inference_worker.demo_model.corpus import heldout_examples, load_corpus
    from inference_worker.grounding import ground_turns, prompt_tokens
    from inference_worker.model_loading import load_variant
    from inference_worker.prompting import build_prompt_ids, prompt_budget
    from inference_worker.torch_threads import on_own_thread

    index = kb.MemoryIndex(load_corpus().passages)
    examples = heldout_examples()[: args.requests]
    report = {"requests": len(examples), "rounds": args.rounds, "variants": {}}
    rows = []
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
            threads=torch.get_num_threads(),
        )
        tokenizer = loaded.tokenizer
        budget = prompt_budget(
            tokenizer, context_budget=settings.CONTEXT_BUDGET_TOKENS, max_new_tokens=settings.MAX_NEW_TOKENS
        )
        prompts: dict[str, list[list[int]]] = {"plain": [], "grounded": []}
        for example in examples:
            turns = [dict(m) for m in example.messages]
            for kind, search in (
                ("plain", None),
                ("grounded", lambda q: index.search(q, limit=3, min_relevance=kb.DEFAULT_MIN_RELEVANCE)),
            ):
                grounded, grounding = ground_turns(
                    turns=turns,
                    tokenizer=tokenizer,
                    budget_tokens=budget,
                    instruction=kb.DEFAULT_INSTRUCTION,
                    search=search,
                )
                extra = grounding.extra_tokens if grounding else 0
                prompts[kind].append(
                    build_prompt_ids(tokenizer=tokenizer, turns=grounded, budget_tokens=prompt_tokens(budget, extra))
                )

        times = on_own_thread(partial(_measure, loaded, prompts, args.rounds), threads=torch.get_num_threads())
        figures = {}
        for kind in ("plain", "grounded"):
            lengths = [len(p) for p in prompts[kind]]
            figures[kind] = {
                "prompt_tokens_mean": sum(lengths) / len(lengths),
                "ttft_ms_p50": percentile(times[kind], 50),
                "ttft_ms_p95": percentile(times[kind], 95),
            }
        figures["ratio_p50"] = figures["grounded"]["ttft_ms_p50"] / figures["plain"]["ttft_ms_p50"]
        report["variants"][variant] = figures
        for kind in ("plain", "grounded"):
            f = figures[kind]
            rows.append(
                [
                    variant,
                    kind,
                    f"{f['prompt_tokens_mean']:.0f}",
                    f"{f['ttft_ms_p50']:.1f}",
                    f"{f['ttft_ms_p95']:.1f}",
                    f"{figures['ratio_p50']:.2f}x" if kind == "grounded" else "",
                ]
            )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(["variant", "prompt", "tokens (mean)", "TTFT p50 ms", "TTFT p95 ms", "grounded/plain p50"], rows)


if __name__ == "__main__":
    main()
