"""`manage.py check --deploy` reports nothing with the production settings that
docs/deployment.md shows, and each HTTPS setting follows the one `HTTPS` switch."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from tests.conftest import ROOT

MARKER = "<!-- production-settings"


def documented_production_env() -> dict[str, str]:
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(re.escape(MARKER) + r".*?-->\s*```sh\n(.*?)```", text, re.S).group(1)
    env = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "export", line
        name, value = words[1].split("=", 1)
        if "$(" in value:  # read from a file on the server: a key of the same kind
            value = "k3y-" + os.urandom(32).hex()
        env[name] = value
    return env


def run_django(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECRET_KEY", "DEBUG"))}
    return subprocess.run(
        [sys.executable, *code_or_args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "chatbot.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_settings():
    env = documented_production_env()
    assert {"DEBUG", "SECRET_KEY", "HTTPS", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS"} <= set(env)
    run = run_django(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "System check identified no issues" in run.stdout


def test_check_deploy_warns_without_https():
    env = documented_production_env()
    env["HTTPS"] = "false"
    run = run_django(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert run.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in run.stderr + run.stdout


def test_the_https_switch_turns_on_every_https_setting():
    code = (
        "import chatbot.settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT,"
        " s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_PROXY_SSL_HEADER)"
    )
    env = documented_production_env()
    on = run_django(["-c", code], env)
    assert on.stdout.split(None, 4)[:4] == ["True", "True", "True", "31536000"], on.stderr
    assert "('HTTP_X_FORWARDED_PROTO', 'https')" in on.stdout
    off = run_django(["-c", code], {**env, "HTTPS": "false"})
    assert off.stdout.split()[:4] == ["False", "False", "False", "0"]
    assert off.stdout.strip().endswith("None")
