"""`python manage.py ensure_demo_staff`: the demo's staff account, created once.

Username and password come from DEMO_STAFF_USERNAME / DEMO_STAFF_PASSWORD (defaults: `admin` /
`admin-demo`). It is a superuser, so it can use every admin page; change the password, or don't
run this, anywhere that is not a demo.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo staff account if it does not exist."

    def handle(self, *args, **options) -> None:
        username = settings.DEMO_STAFF_USERNAME
        password = settings.DEMO_STAFF_PASSWORD
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"demo staff account: {username} (exists; password unchanged)")
            return
        user_model.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"demo staff account: {username} / {password}")
