"""The layering the code relies on: the web app never imports the worker's code (which needs
torch), and the engine's bookkeeping modules import no torch."""

from __future__ import annotations

import ast

from tests.conftest import ROOT


def imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_in_the_web_app_imports_the_worker():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported_modules(path) if name.startswith("inference_worker")
        )
        for path in (ROOT / "chatbot").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert imported_modules(ROOT / "inference_worker" / "tasks.py") >= {"chatbot.celery"}  # the scan sees imports
