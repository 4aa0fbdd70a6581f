from typing import Any

from django.core.management.base import CommandError, CommandParser

from kb.management.base import KbCommand, get_collection, get_group, get_user
from kb.models import Role
from kb.services import member_add


def add_principal_arguments(parser: CommandParser) -> None:
    parser.add_argument("slug", help="the collection")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--group")


class Command(KbCommand):
    help = "Give a user or group a role in a collection (reader, editor or owner)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_principal_arguments(parser)
        parser.add_argument("--role", required=True, choices=[r.label for r in Role])

    def handle(self, *args: Any, **options: Any) -> None:
        collection = get_collection(options["slug"])
        user = get_user(options["user"]) if options["user"] else None
        group = get_group(options["group"]) if options["group"] else None
        try:
            role = Role.parse(options["role"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        _, changed = member_add(
            collection=collection, role=role, user=user, group=group, actor=self.actor
        )
        who = options["user"] or f"group {options['group']}"
        state = "now" if changed else "already"
        self.stdout.write(f"{who} is {state} {role.label} of {collection.slug}")
