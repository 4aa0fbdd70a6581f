from typing import Any

from django.core.management.base import CommandParser

from kb.management.base import KbCommand
from kb.services import collection_create


class Command(KbCommand):
    help = "Create a collection. Does nothing if the slug exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        collection, created = collection_create(
            slug=options["slug"],
            name=options["name"],
            description=options["description"],
            actor=self.actor,
        )
        self.stdout.write(f"{'created' if created else 'exists'} collection {collection.slug}")
