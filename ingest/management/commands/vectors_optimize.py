import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from ingest import term_stats
from kb.management.base import KbCommand


class Command(KbCommand):
    help = (
        "With kb stopped: index the embedded vector store for fast search (a Qdrant "
        "server does this by itself) and count BM25's terms per collection again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.QDRANT_URL:
            raise CommandError("QDRANT_URL is set: the Qdrant server indexes by itself")
        from ingest.vectors import vector_store, vector_store_close
        from ingest.vectors.edge import EdgeStore, ShardBusy

        try:
            store = vector_store()
        except ShardBusy as error:
            raise CommandError(f"{error}; stop kb first") from None
        assert isinstance(store, EdgeStore)
        started = time.monotonic()
        try:
            points, indexed = store.optimize()
        finally:
            vector_store_close()
        terms = term_stats.collections_recount()
        seconds = time.monotonic() - started
        self.stdout.write(
            f"optimized points={points} indexed={indexed} terms={terms} seconds={seconds:.1f}"
        )
