"""`python manage.py evaluate_models [--json] [--limit N] [--no-conversations]`: compare the
FP16 and GPTQ variants on the held-out questions and the held-out multi-turn conversations (see
inference_worker/demo_model/evaluate.py for what is measured).

Exits 1 when a threshold fails: single questions, FP16 accuracy below 0.80 or GPTQ below 0.95 x
FP16's; conversations (greedy), an FP16 turn bucket below 0.90, FP16 turns 7-10 more than 3 points
below turn 1, a GPTQ bucket below 0.97 x FP16's; sampled accuracy more than 3 points below greedy.
"""

from __future__ import annotations

import json
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Evaluate the FP16 and GPTQ 4-bit variants on the held-out support questions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
        parser.add_argument(
            "--limit", type=int, default=None, help="evaluate the first N questions (and N conversations)"
        )
        parser.add_argument(
            "--no-conversations", action="store_true", help="single questions only (seconds instead of minutes)"
        )
        parser.add_argument(
            "--no-grounding", action="store_true", help="skip the answers grounded in the help center's passages"
        )

    def handle(self, *args: object, **options: object) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer, GenerationConfig

        from inference_worker.demo_model.evaluate import evaluate_models
        from inference_worker.demo_model.quantize import stdout_to_stderr
        from inference_worker.engine_factory import checkpoint_sampling
        from inference_worker.prompting import prompt_budget
        from inference_worker.runtime import engine_spec

        fp16_path = settings.MODEL_VARIANTS["fp16"]["path"]
        # The prompt budget and the sampling the worker would use (runtime.engine_spec).
        budget = prompt_budget(
            AutoTokenizer.from_pretrained(fp16_path),
            context_budget=settings.CONTEXT_BUDGET_TOKENS,
            max_new_tokens=settings.MAX_NEW_TOKENS,
        )
        sampling = {}
        for variant in settings.MODEL_VARIANTS:
            # As the worker resolves it (engine_factory.generation_config_for): the settings'
            # override over the checkpoint's own generation config.
            spec = engine_spec(variant)
            config = GenerationConfig.from_pretrained(spec.path)
            sampling[variant] = checkpoint_sampling(config, temperature=spec.temperature, top_p=spec.top_p)

        # Loading the GPTQ checkpoint imports gptqmodel, which prints to stdout; stdout is the
        # report here (one JSON object with --json).
        with stdout_to_stderr():
            report = evaluate_models(
                fp16_path=fp16_path,
                gptq_path=settings.MODEL_VARIANTS["gptq-int4"]["path"],
                limit=options["limit"],
                budget_tokens=budget,
                sampling=sampling,
                conversations=not options["no_conversations"],
                grounding=not options["no_grounding"],
            )
        if options["json"]:
            self.stdout.write(json.dumps(report, sort_keys=True))
        else:
            self.stdout.write(_human(report))
        if not report["passed"]:
            sys.exit(1)


def _human(report: dict) -> str:
    lines = [f"held-out questions: {report['examples']}"]
    for name, result in report["variants"].items():
        lines.append(
            f"{name:10s} accuracy {result['accuracy']:.3f} ({result['correct']}/{result['examples']})"
            f"  think leaks {result['think_leaks']}  missing </think> {result['missing_think_close']}"
            f"  unfinished {result['unfinished']}  mean tokens {result['mean_generated_tokens']:.1f}"
            f" (reply {result['mean_reply_tokens']:.1f})  {result['tokens_per_second']:.0f} tok/s"
        )
        handoff = result["handoff"]
        lines.append(
            f"{'':10s} handoff precision {handoff['precision']:.3f} recall {handoff['recall']:.3f}"
            f" (tp {handoff['true_positive']}, fp {handoff['false_positive']}, fn {handoff['false_negative']})"
        )
        for miss in result["misses"][:5]:
            lines.append(f"    miss: expected {miss['expected']}, got ~{miss['predicted']}")
    if report["conversations"]:
        first = next(iter(report["conversations"].values()))["greedy"]
        lines.append(
            f"held-out conversations: {first['conversations']} ({first['turns']} turns), prompt budget "
            f"{report['prompt_budget_tokens']} tokens; accuracy by turn:"
        )
        buckets = list(first["by_turn"])
        lines.append(
            f"{'variant':10s} {'decoding':24s} " + " ".join(f"{b:>6s}" for b in buckets) + "    all  handoff P/R"
        )
        for name, runs in report["conversations"].items():
            for figures in runs.values():
                how = "greedy"
                if figures["sampling"]:
                    how = f"sampled t={figures['sampling']['temperature']:g} p={figures['sampling']['top_p']:g}"
                cells = " ".join(f"{figures['by_turn'][b]['accuracy']:6.3f}" for b in buckets)
                handoff = figures["handoff"]
                lines.append(
                    f"{name:10s} {how:24s} {cells} {figures['accuracy']:6.3f}  "
                    f"{handoff['precision']:.2f}/{handoff['recall']:.2f}"
                )
                for miss in figures["misses"][:3]:
                    lines.append(f"    miss: turn {miss['turn']} expected {miss['expected']}, got ~{miss['predicted']}")
    if report.get("grounding"):
        lines.append("grounded in the help center (held-out store questions, passages from the product's retrieval):")
        lines.append(
            f"{'variant':10s} {'grounded':>15s} {'retrieval':>9s} {'edited':>13s} {'stale':>6s} "
            f"{'not found':>13s} {'P/R checked':>11s} {'source':>7s} {'article':>8s}"
        )
        for name, g in report["grounding"].items():
            checked = g["no_answer"]["checked"]
            lines.append(
                f"{name:10s} {g['grounded']['accuracy']:6.3f} / {g['grounded']['accuracy_checked']:6.3f} "
                f"{g['grounded']['retrieval_recall']:9.3f} "
                f"{g['edited']['follows_article']:5.3f} / {g['edited']['follows_article_checked']:5.3f} "
                f"{g['edited']['stale']:6.3f} "
                f"{g['no_answer']['said_unknown']:5.3f} / {g['no_answer']['said_unknown_checked']:5.3f} "
                f"{checked['precision']:5.2f}/{checked['recall']:.2f} "
                f"{g['sources']['right_passage']:7.3f} {g['sources']['right_article']:8.3f}"
            )
        lines.append(
            "  each 'a / b': the model's own answers / after the worker's answer check (what customers get). "
            "grounded: the exact expected answer (the right passage cited, or 'not found' where retrieval missed "
            "it); retrieval: the right passage among those given; edited: answers stating exactly the edited "
            "article's figures, cited (goal >= 0.90); stale: the model stating a replaced figure; not found: "
            "'not found' when the right passage is not in the knowledge base, P/R of 'not found' over both "
            "sets; source: the model cites the right passage (article: its article)"
        )
        for name, g in report["grounding"].items():
            outcomes = g["edited"].get("outcomes", {})
            lines.append(
                f"  {name} edited, the model's answers where its passage was given: "
                + ", ".join(f"{kind} {count}" for kind, count in outcomes.items())
                + f"; its reasoning named the right passage {g['edited'].get('reasoning_names_passage', 0):.3f}, "
                f"followed after the expected reasoning {g['edited'].get('follows_given_reasoning', 0):.3f}"
            )
    for scope, figures in report["comparison"].items():
        if figures.get("prompts"):
            lines.append(
                f"fp16 vs gptq ({scope}, {figures['prompts']} prompts): greedy token agreement "
                f"{figures['greedy_token_agreement']:.3f}, identical {figures['identical_sequences']:.3f}, "
                f"logits rel. error {figures['logits_relative_error']:.4f} "
                f"(max {figures['logits_relative_error_max']:.4f})"
            )
    thresholds = report["thresholds"]
    lines.append(
        f"thresholds: fp16 >= {thresholds['fp16_min_accuracy']}, gptq >= "
        f"{thresholds['gptq_min_accuracy_ratio_to_fp16']} x fp16; conversations: fp16 every bucket >= "
        f"{thresholds['fp16_min_turn_accuracy']}, 7-10 within {thresholds['max_late_turn_drop']} of turn 1, "
        f"gptq >= {thresholds['gptq_min_turn_ratio_to_fp16']} x fp16, sampled within "
        f"{thresholds['max_sampled_drop']} of greedy -> "
        + ("PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"]))
    )
    return "\n".join(lines)
