from typing import Any

from django.core.management.base import CommandParser

from kb.management.base import KbCommand, get_collection, get_user, parse_expiry
from kb.models import TokenScope
from kb.services import token_create


class Command(KbCommand):
    help = "Create an API token. The secret is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="the user or service account it acts for")
        parser.add_argument("--collections", required=True, help="comma-separated collection slugs")
        parser.add_argument("--scope", required=True, choices=[s.value for s in TokenScope])
        parser.add_argument("--expires", help="e.g. 30d, 12h, 2w or a date")
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user(options["user"])
        slugs = [s.strip() for s in options["collections"].split(",") if s.strip()]
        collections = [get_collection(slug) for slug in slugs]
        expires_at = parse_expiry(options["expires"]) if options["expires"] else None
        token, secret = token_create(
            user=user,
            collections=collections,
            scope=TokenScope(options["scope"]),
            expires_at=expires_at,
            name=options["name"],
            actor=self.actor,
        )
        until = f" until {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
        self.stderr.write(
            f"token {token.prefix} for {user.username}: {token.scope} on {','.join(slugs)}{until}. "
            "It is shown once; store it now."
        )
        self.stdout.write(secret)
