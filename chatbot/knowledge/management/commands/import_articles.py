"""`manage.py import_articles <folder> [--draft] [--if-empty]`: the folder's Markdown articles
into the knowledge base (chatbot.knowledge.services.articles_import)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chatbot.knowledge.services import articles_import


class Command(BaseCommand):
    help = (
        "Imports every *.md file of a folder as a help-center article (slug: the file name; title: "
        "its '# Title' line): creates, updates (a new revision only if changed) or leaves each one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--draft", action="store_true", help="create new articles unpublished")
        parser.add_argument("--if-empty", action="store_true", help="do nothing if the knowledge base has any article")

    def handle(self, *args, folder: Path, draft: bool, if_empty: bool, **options) -> None:
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        report = articles_import(folder=folder, draft=draft, if_empty=if_empty)
        if report.not_empty:
            self.stdout.write("The knowledge base has articles already: nothing imported (--if-empty).")
            return
        for name, reason in report.skipped:
            self.stderr.write(f"skipped {name}: {reason}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged, {len(report.skipped)} skipped"
        )
