"""`python manage.py evaluate_models [--json] [--limit N]`: compare the FP16 and GPTQ variants
on the held-out questions (see inference_worker/demo_model/evaluate.py for what is measured).

Exits 1 when FP16 accuracy is below 0.80 or GPTQ accuracy below 0.95 x FP16's.
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
        parser.add_argument("--limit", type=int, default=None, help="evaluate the first N questions")

    def handle(self, *args: object, **options: object) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from inference_worker.demo_model.evaluate import evaluate_models
        from inference_worker.demo_model.quantize import stdout_to_stderr

        # Loading the GPTQ checkpoint imports gptqmodel, which prints to stdout; stdout is the
        # report here (one JSON object with --json).
        with stdout_to_stderr():
            report = evaluate_models(
                fp16_path=settings.MODEL_VARIANTS["fp16"]["path"],
                gptq_path=settings.MODEL_VARIANTS["gptq-int4"]["path"],
                limit=options["limit"],
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
        for miss in result["misses"][:5]:
            lines.append(f"    miss: expected {miss['expected']}, got ~{miss['predicted']}")
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
        f"{thresholds['gptq_min_accuracy_ratio_to_fp16']} x fp16 -> "
        + ("PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"]))
    )
    return "\n".join(lines)
