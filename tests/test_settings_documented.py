"""Every setting is read from the environment in chatbot/settings.py, and docs/settings.md lists
each one."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_every_setting_read_from_the_environment_is_documented():
    source = (ROOT / "chatbot" / "settings.py").read_text()
    read = set(re.findall(r"env_(?:str|int|float|optional_float|optional_int|bool|list)\(\s*\"([A-Z0-9_]+)\"", source))
    assert {"DATABASE_URL", "ENGINE_BACKEND", "ENGINE_LOG_LEVEL"} <= read  # the scan finds them
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "settings.md").read_text()))
    assert sorted(read - documented) == []


def test_only_settings_py_reads_the_environment():
    offenders = []
    for folder in ("chatbot", "inference_worker"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "settings.py" or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if re.search(r"os\.environ(\.get)?\s*[\[(]\s*\"|os\.getenv\(", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
