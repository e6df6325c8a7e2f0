"""docker-compose.yml with nothing set: no demo account, the web published on 127.0.0.1 only, no
published SECRET_KEY (the product then refuses to start, saying what to set), Redis behind a
password that REDIS_URL carries."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from tests.conftest import ROOT


def with_defaults(value: str) -> str:
    """Compose's interpolation with no variable set: `${NAME:-default}` is the default, `${NAME}` empty."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::-([^}]*))?\}", lambda match: match.group(1) or "", value)


def compose() -> dict:
    return yaml.safe_load(with_defaults((ROOT / "docker-compose.yml").read_text()))


def test_the_web_is_published_on_the_loopback_address_only():
    (port,) = compose()["services"]["web"]["ports"]
    assert port == "127.0.0.1:8000:8000"


def test_no_demo_staff_account_and_no_published_secret_key_by_default():
    services = compose()["services"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert str(env["DEMO_MODE"]).lower() in ("", "0", "false")
        assert env["SECRET_KEY"] in ("", None)
    # With compose's environment, the settings refuse to load and say what to set.
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update({k: "" if v is None else str(v) for k, v in services["web"]["environment"].items()})
    run = subprocess.run(
        [sys.executable, "-c", "import chatbot.settings"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0 and "set SECRET_KEY" in run.stderr


def test_redis_asks_for_the_password_that_redis_url_carries_and_is_not_published():
    services = compose()["services"]
    command = services["redis"]["command"]
    password = command[command.index("--requirepass") + 1]
    assert password
    assert services["web"]["environment"]["REDIS_URL"] == f"redis://:{password}@redis:6379/0"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == password
    assert "ports" not in services["redis"]
