from typing import Any

from django.core.management.base import CommandError, CommandParser

from kb.management.base import KbCommand
from kb.models import ApiToken
from kb.services import token_revoke


class Command(KbCommand):
    help = "Revoke an API token by its prefix (see token_list)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="the token's prefix, or the whole token")

    def handle(self, *args: Any, **options: Any) -> None:
        given: str = options["prefix"]
        prefix = given.split("_")[1] if given.startswith("kb_") else given
        token = ApiToken.objects.filter(prefix=prefix).first()
        if token is None:
            raise CommandError(f"no token with prefix {prefix!r}")
        revoked = token_revoke(token=token, actor=self.actor)
        self.stdout.write(f"token {prefix} {'revoked' if revoked else 'was already revoked'}")
