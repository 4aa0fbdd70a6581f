from typing import Any

from django.core.management.base import CommandParser
from django.utils import timezone

from kb.management.base import KbCommand
from kb.selectors import token_list


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


class Command(KbCommand):
    help = "List API tokens (never their secrets)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="only this user's tokens")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        self.stdout.write(
            f"{'prefix':<13} {'user':<13} {'scope':<11} {'state':<8} "
            f"{'expires':<17} {'last used':<17} collections"
        )
        for token in token_list(user_name=options["user"]):
            if token.revoked_at:
                state = "revoked"
            elif token.expires_at and token.expires_at <= now:
                state = "expired"
            else:
                state = "active"
            slugs = ",".join(sorted(c.slug for c in token.collections.all()))
            self.stdout.write(
                f"{token.prefix:<13} {token.user.username:<13} {token.scope:<11} {state:<8} "
                f"{_when(token.expires_at):<17} {_when(token.last_used_at):<17} {slugs}"
            )
