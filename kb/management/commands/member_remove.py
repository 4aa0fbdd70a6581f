from typing import Any

from django.core.management.base import CommandParser

from kb.management.base import KbCommand, get_collection, get_group, get_user
from kb.management.commands.member_add import add_principal_arguments
from kb.services import member_remove


class Command(KbCommand):
    help = "Take a user's or group's role in a collection away."

    def add_arguments(self, parser: CommandParser) -> None:
        add_principal_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        collection = get_collection(options["slug"])
        user = get_user(options["user"]) if options["user"] else None
        group = get_group(options["group"]) if options["group"] else None
        removed = member_remove(collection=collection, user=user, group=group, actor=self.actor)
        who = options["user"] or f"group {options['group']}"
        state = "removed from" if removed else "was not a member of"
        self.stdout.write(f"{who} {state} {collection.slug}")
