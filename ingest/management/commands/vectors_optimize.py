import time
from typing import Any

from django.core.management.base import CommandError

from ingest import term_stats
from kb.management.base import KbCommand


class Command(KbCommand):
    help = (
        "With kb stopped: index the embedded vector store for fast search (a Qdrant "
        "server does this by itself) and count BM25's terms per collection again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        from ingest.vectors import StoreBusy, vector_store, vector_store_close

        try:
            store = vector_store()
        except StoreBusy as error:
            raise CommandError(f"{error}; stop kb first") from None
        started = time.monotonic()
        try:
            optimized = store.optimize()
        finally:
            vector_store_close()
        if optimized is None:
            raise CommandError(f"{store.describe()} indexes by itself")
        points, indexed = optimized
        terms = term_stats.collections_recount()
        seconds = time.monotonic() - started
        self.stdout.write(
            f"optimized points={points} indexed={indexed} terms={terms} seconds={seconds:.1f}"
        )
