"""The vector store port: the only code that knows Qdrant's API (the sparse encoder,
ingest.sparse, uses Qdrant's BM25 tokenizer). Nothing outside this package imports an
adapter: the types, the payload fields and the busy error are in `base`.

Two adapters share one contract (tests/test_vectors.py runs against both):
`edge` is Qdrant's engine inside this process (the embedded default), `server` talks
to a Qdrant server or cluster through qdrant-client (production, `QDRANT_URL`).
"""

import functools
import logging
import threading
from pathlib import Path

from django.conf import settings

from ingest.vectors.base import Hit, Point, SearchMode, StoreBusy, VectorStore, point_payload

__all__ = [
    "Hit",
    "Point",
    "SearchMode",
    "StoreBusy",
    "VectorStore",
    "embedded_counts",
    "embedded_folder",
    "point_payload",
    "vector_store",
    "vector_store_close",
]

_lock = threading.Lock()
logger = logging.getLogger(__name__)


@functools.cache
def _open() -> VectorStore:
    store = _connect()
    if store.idf_in_store:
        logger.warning(
            "the vector store was made by an earlier kb: its BM25 term weights count the "
            "passages of every collection. Ingest into a new data folder (or Qdrant "
            "collection) to have them count only the collections searched."
        )
    return store


def _connect() -> VectorStore:
    from ingest import embedder

    name = f"kb-{embedder.model_name()}".lower()
    dimensions = embedder.dimensions()
    if settings.QDRANT_URL:
        from ingest.vectors.server import ServerStore

        return ServerStore.connect(
            url=settings.QDRANT_URL,
            api_key=settings.QDRANT_API_KEY or None,
            collection=name,
            dimensions=dimensions,
        )
    from ingest.vectors.edge import EdgeStore

    return EdgeStore.open(embedded_folder() / name, dimensions=dimensions)


def embedded_folder() -> Path:
    """Where the embedded engine keeps its stores, one folder per embedding model."""
    return Path(settings.KB_DATA_DIR) / "vectors"


def embedded_counts(folder: Path) -> dict[str, dict[str, int]]:
    """Points and live points of each store in a copy of `embedded_folder()` (a
    backup's): never the one its owner has open."""
    from ingest.vectors.edge import shard_counts

    counts = {}
    for store in sorted(p for p in folder.iterdir() if p.is_dir()):
        points, live = shard_counts(store)
        counts[store.name] = {"points": points, "live_points": live}
    return counts


def vector_store() -> VectorStore:
    """This process's store, opened on first use (the embedded one: by its one owner)."""
    with _lock:
        return _open()


def vector_store_close() -> None:
    with _lock:
        if _open.cache_info().currsize:
            _open().close()
            _open.cache_clear()
