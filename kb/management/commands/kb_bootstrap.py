import secrets
from typing import Any

from django.contrib.auth.models import User

from kb.management.base import KbCommand
from kb.services import user_create


class Command(KbCommand):
    help = "First start: create an administrator and print its password, once."

    def handle(self, *args: Any, **options: Any) -> None:
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        user_create(username="admin", password=password, superuser=True, actor=self.actor)
        bar = "=" * 60
        self.stdout.write(
            f"{bar}\nkb administrator created (shown once, keep it):\n"
            f"  user name: admin\n  password:  {password}\n{bar}"
        )
