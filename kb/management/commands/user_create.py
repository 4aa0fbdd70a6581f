import sys
from typing import Any

from django.core.management.base import CommandParser

from kb.management.base import KbCommand
from kb.services import user_create


class Command(KbCommand):
    help = "Create a user (or a service account). Does nothing if the user exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
        parser.add_argument("--superuser", action="store_true")
        parser.add_argument(
            "--service-account",
            action="store_true",
            help="a machine user with no password, acting only through API tokens",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = sys.stdin.readline().rstrip("\n") if options["password_stdin"] else None
        user, created = user_create(
            username=options["username"],
            email=options["email"],
            password=password,
            superuser=options["superuser"],
            service_account=options["service_account"],
            actor=self.actor,
        )
        self.stdout.write(f"{'created' if created else 'exists'} user {user.username}")
