"""`python manage.py seed_demo_history [--conversations N] [--days 90] [--seed 7]`: realistic
support history, so that the demo's analytics are not empty (`make run` offers it)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandParser

from chatbot.analytics.seeding import seed_history


class Command(BaseCommand):
    help = "Write realistic support history (both variants, handoffs, agents, ratings) over the past days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--conversations", type=int, default=2000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args: object, **options: object) -> None:
        started = time.perf_counter()
        seeded = seed_history(
            conversations=int(options["conversations"]), days=int(options["days"]), seed=int(options["seed"])
        )
        self.stdout.write(
            f"seeded {seeded.conversations} conversations, {seeded.messages} messages, {seeded.ratings} ratings "
            f"over {options['days']} days in {time.perf_counter() - started:.1f} s"
        )
