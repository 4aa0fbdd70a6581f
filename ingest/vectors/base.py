from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ingest.sparse import SparseVector

SearchMode = Literal["hybrid", "dense", "sparse"]

# Payload fields. `live` turns true only when a whole version is indexed.
COLLECTION_ID = "collection_id"
# The collection id again, as a string: Qdrant keeps a tenant's points together only for
# a keyword (or UUID) index marked is_tenant, and searches filter on it.
TENANT = "tenant"
DOCUMENT_ID = "document_id"
VERSION = "version"
CHUNK_ID = "chunk_id"
PAGE = "page"
CONTENT_TYPE = "content_type"
LIVE = "live"  # 0 or 1: the in-process engine does not match booleans

# The fields a search filters on: each adapter indexes these, by kind ("tenant": a
# keyword index with is_tenant).
INDEXED_FIELDS: dict[str, Literal["tenant", "integer", "keyword"]] = {
    TENANT: "tenant",
    DOCUMENT_ID: "integer",
    LIVE: "integer",
    CONTENT_TYPE: "keyword",
}


class StoreBusy(RuntimeError):
    """Another process owns the vector store (the embedded engine admits one)."""


def tenant_key(collection_id: int) -> str:
    return str(collection_id)


def point_payload(
    *,
    collection_id: int,
    document_id: int,
    version: int,
    chunk_id: int,
    page: int | None,
    content_type: str,
) -> dict[str, Any]:
    """A passage's payload, written not yet live: set_live turns its version on whole."""
    return {
        COLLECTION_ID: collection_id,
        TENANT: tenant_key(collection_id),
        DOCUMENT_ID: document_id,
        VERSION: version,
        CHUNK_ID: chunk_id,
        PAGE: page,
        CONTENT_TYPE: content_type,
        LIVE: 0,
    }


@dataclass(frozen=True)
class Point:
    id: str  # a UUID, derived from the version and the chunk's index
    dense: Sequence[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """What a search may see. `collection_ids` is the caller's permitted set: required."""

    collection_ids: Sequence[int]
    document_ids: Sequence[int] | None = None
    content_types: Sequence[str] | None = None


class VectorStore(Protocol):
    # True for a store made before kb weighed query terms by the searched collections
    # (ingest.term_stats): Qdrant's IDF modifier weighs them there, over all of them.
    idf_in_store: bool

    def upsert(self, points: Sequence[Point]) -> None: ...

    def set_live(self, *, document_id: int, version: int) -> None:
        """Make one version's points searchable."""

    def delete(self, *, document_id: int, version: int | None = None) -> None:
        """Remove a version's points, or with no version all of the document's."""

    def delete_other_versions(self, *, document_id: int, keep_version: int) -> None: ...

    def search(
        self,
        *,
        dense: Sequence[float] | None,
        sparse: SparseVector | None,
        scope: Scope,
        limit: int,
        mode: SearchMode = "hybrid",
        candidates: int = 100,
    ) -> list[Hit]: ...

    def count(self, *, document_id: int | None = None, live_only: bool = False) -> int: ...

    def describe(self) -> str:
        """Where the store is, for the status page (never a secret)."""

    def optimize(self) -> tuple[int, int] | None:
        """Build the search index now: (points, indexed), or None where the store does
        this by itself."""

    def close(self) -> None: ...
