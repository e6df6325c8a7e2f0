"""`python manage.py build_demo_model [--force] [--preset full|reader|small|tiny]`: build the demo model.

Trains the tokenizer and the FP16 model on the support corpus and quantizes it to GPTQ, into the
folders the settings name; parts that are already complete are kept unless --force.
"""

from __future__ import annotations

import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Build the demo model (tokenizer, FP16 and GPTQ 4-bit variants) from the support corpus."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="rebuild every part")
        parser.add_argument("--preset", choices=("full", "reader", "small", "tiny"), default="full")
        parser.add_argument("--json", action="store_true", help="also print the build report as JSON")

    def handle(self, *args: object, **options: object) -> None:
        # No hub on these machines; nothing here needs one.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from inference_worker.demo_model.build import build_demo_model

        def log(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        report = build_demo_model(
            model_dir=settings.MODEL_DIR,
            fp16_dir=settings.MODEL_VARIANTS["fp16"]["path"],
            gptq_dir=settings.MODEL_VARIANTS["gptq-int4"]["path"],
            force=bool(options["force"]),
            preset=str(options["preset"]),
            seed=settings.DEMO_MODEL_SEED,
            bits=settings.GPTQ_BITS,
            group_size=settings.GPTQ_GROUP_SIZE,
            log=log,
        )
        for part in report.parts:
            state = "built" if part.built else "kept"
            log(f"{part.name:10s} {state:5s} {part.seconds:7.1f} s  {part.path}")
        log(f"total {report.seconds:.1f} s")
        if options["json"]:
            log(json.dumps(report.to_dict(), indent=2))
