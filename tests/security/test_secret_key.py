"""The product refuses to start with DEBUG off and an empty or published SECRET_KEY, saying what
to set; `make run` keeps a random key of its own in var/secret_key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

GOOD_KEY = "a-long-random-key-for-this-test-only-5f0c9e1d7b3a2c4e6f8a0b1c2d3e4f50"


def load_settings(**env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import chatbot.settings as s; print(len(s.SECRET_KEY))"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "key",
    ["", "   ", "change-me", "CHANGE-ME", "insecure-demo-key-change-me-in-production", "django-insecure-abc123"],
)
def test_settings_refuse_an_empty_or_published_secret_key_with_debug_off(key):
    run = load_settings(SECRET_KEY=key, DEBUG="false")
    assert run.returncode != 0
    assert "ImproperlyConfigured" in run.stderr
    assert "set SECRET_KEY to a long random string" in run.stderr


def test_settings_refuse_a_missing_secret_key_with_debug_off():
    run = load_settings()
    assert run.returncode != 0 and "set SECRET_KEY" in run.stderr


def test_settings_take_a_real_secret_key_and_debug_runs_without_one():
    assert load_settings(SECRET_KEY=GOOD_KEY).returncode == 0
    debug = load_settings(DEBUG="true")
    assert debug.returncode == 0, debug.stderr
    assert int(debug.stdout) >= 50  # a random key of the process's own, not a published one


def test_make_run_s_key_is_random_made_once_and_kept_private(tmp_path):
    script = ROOT / "scripts" / "secret_key.sh"
    env = dict(os.environ, VAR_DIR=str(tmp_path / "var"))
    first = subprocess.run([script], env=env, capture_output=True, text=True, check=True).stdout
    again = subprocess.run([script], env=env, capture_output=True, text=True, check=True).stdout
    assert first == again and len(first) >= 50
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0
    other = subprocess.run(
        [script], env=dict(env, VAR_DIR=str(tmp_path / "other")), capture_output=True, text=True, check=True
    ).stdout
    assert other != first
    assert load_settings(SECRET_KEY=first).returncode == 0
