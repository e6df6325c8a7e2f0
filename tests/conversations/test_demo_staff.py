"""`manage.py ensure_demo_staff`: the demo staff account exists only in demo mode, with a random
password printed once (or DEMO_STAFF_PASSWORD), never a published one."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def run_command() -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("ensure_demo_staff", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_without_demo_mode_no_account_is_created_and_the_command_says_so(settings):
    settings.DEMO_MODE = False
    out, err = run_command()
    assert not get_user_model().objects.exists()
    assert "DEMO_MODE is off" in err


def test_in_demo_mode_the_account_gets_a_random_password_printed_once(settings):
    settings.DEMO_MODE = True
    settings.DEMO_STAFF_USERNAME = "admin"
    settings.DEMO_STAFF_PASSWORD = ""
    out, _ = run_command()
    password = re.search(r"demo staff account: admin / (\S+)", out).group(1)
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password)
    assert not user.check_password("admin-demo") and len(password) >= 16
    again, _ = run_command()
    assert password not in again and "exists; password unchanged" in again
    assert get_user_model().objects.get(username="admin").check_password(password)
    # Another demo database gets another password.
    get_user_model().objects.all().delete()
    other, _ = run_command()
    assert re.search(r"demo staff account: admin / (\S+)", other).group(1) != password


def test_in_demo_mode_demo_staff_password_sets_it_and_is_not_printed(settings):
    settings.DEMO_MODE = True
    settings.DEMO_STAFF_USERNAME = "demo"
    settings.DEMO_STAFF_PASSWORD = "chosen-by-the-operator"
    out, _ = run_command()
    assert "chosen-by-the-operator" not in out
    assert get_user_model().objects.get(username="demo").check_password("chosen-by-the-operator")


def test_the_published_demo_password_is_nowhere_in_the_project():
    from tests.conftest import ROOT

    offenders = []
    for folder in ("chatbot", "inference_worker", "scripts", "docs", "templates", "static"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".sh", ".md", ".html", ".js", ".yml"}:
                if "admin-demo" in path.read_text(errors="replace"):
                    offenders.append(str(path.relative_to(ROOT)))
    for name in ("README.md", "docker-compose.yml", "Makefile", "Dockerfile"):
        if "admin-demo" in (ROOT / name).read_text():
            offenders.append(name)
    assert offenders == []
