import time
from typing import Any

from django.core.management.base import CommandParser

from ingest.services import documents_reingest
from kb.management.base import KbCommand, get_collection
from server.management.progress import versions_wait
from server.runtime import background_work


class Command(KbCommand):
    help = (
        "Process every document of a collection again, as a new version of each (after a "
        "change of embedding model); the old versions serve until then."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("collection")
        parser.add_argument(
            "--wait", action="store_true", help="block until every document is indexed or failed"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        collection = get_collection(options["collection"])
        started = time.monotonic()
        with background_work() as work:
            version_ids = documents_reingest(collection=collection, actor=self.actor)
            self.stdout.write(f"queued {len(version_ids)} documents ({work.describe()})")
            if not options["wait"]:
                return
            ready, failed = versions_wait(self, version_ids)
        seconds = time.monotonic() - started
        self.stdout.write(
            f"reingest documents={len(version_ids)} ready={len(ready)} failed={len(failed)} "
            f"seconds={seconds:.1f}"
        )
