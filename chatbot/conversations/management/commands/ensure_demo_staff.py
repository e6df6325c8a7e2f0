"""`python manage.py ensure_demo_staff`: the demo's staff account, created once, in demo mode only.

With DEMO_MODE off (the default, and docker-compose's) it creates nothing and says so: a
superuser with a known name must not appear on a server by itself. In demo mode (`make run`) it
creates DEMO_STAFF_USERNAME (default `admin`) as a superuser, with DEMO_STAFF_PASSWORD or, when
that is empty, a random password printed this once; later runs leave the account as it is.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


def demo_password_generate() -> str:
    return secrets.token_urlsafe(12)


class Command(BaseCommand):
    help = "Create the demo staff account if it does not exist (only with DEMO_MODE on)."

    def handle(self, *args, **options) -> None:
        if not settings.DEMO_MODE:
            self.stderr.write(
                "DEMO_MODE is off: no demo staff account created "
                "(create staff with `manage.py createsuperuser`, or set DEMO_MODE=1 for a demo)"
            )
            return
        username = settings.DEMO_STAFF_USERNAME
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(
                f"demo staff account: {username} (exists; password unchanged: "
                f"`manage.py changepassword {username}` sets a new one)"
            )
            return
        password = settings.DEMO_STAFF_PASSWORD or demo_password_generate()
        user_model.objects.create_superuser(username=username, email="", password=password)
        if settings.DEMO_STAFF_PASSWORD:
            self.stdout.write(f"demo staff account: {username} (password from DEMO_STAFF_PASSWORD)")
        else:
            self.stdout.write(f"demo staff account: {username} / {password}  (shown this once)")
