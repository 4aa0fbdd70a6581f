"""Hybrid search scoped by access: the permitted collections go into the vector query
as a filter, never applied to results afterwards."""

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from django.conf import settings
from django.db import connection
from django.urls import reverse

from ingest import embedder, sparse, term_stats
from ingest.models import Chunk, Document
from ingest.sparse import SparseVector
from ingest.vectors import Hit, VectorStore, vector_store
from ingest.vectors.base import DOCUMENT_ID, Scope
from kb.models import Collection, Role
from kb.principal import Principal
from kb.selectors import collection_get, readable_collections
from retrieval import fusion

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

SearchMode = Literal["hybrid", "dense", "sparse"]

# The cap per document is applied to the store's candidates, so a search fetches more of
# them until the cap leaves top_k (or the scope has no more). It stops widening here:
# past it one document holds thousands of passages closer than any other's.
MAX_CANDIDATES = 4096
# Candidates of each list a hybrid search fuses (more found no better ranking on SciFact).
HYBRID_CANDIDATES = 100


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    document_id: int
    document_title: str
    collection: str
    collection_id: int
    text: str
    score: float
    page: int | None
    section: str

    @property
    def url(self) -> str:
        return reverse("passage", args=[self.chunk_id])


@dataclass(frozen=True)
class SearchResult:
    passages: list[Passage]
    # Cosine of the question to the nearest passage (0 when none), when asked for.
    best_similarity: float = 0.0


def scope_collections(principal: Principal, slugs: Sequence[str] | None) -> list[Collection]:
    """The collections to search: those named (each must be readable, else 404), or all
    the principal may read."""
    if slugs:
        return [
            collection_get(principal, slug, role=Role.READER)[0] for slug in dict.fromkeys(slugs)
        ]
    return [collection for collection, _ in readable_collections(principal)]


@functools.cache
def _reranker() -> "CrossEncoder":
    from sentence_transformers import CrossEncoder

    model: CrossEncoder = CrossEncoder(settings.KB_RERANKER_PATH, local_files_only=True)
    return model


def rerank(query: str, passages: list[Passage]) -> list[Passage]:
    """Reorder by the configured cross-encoder's reading of (question, passage)."""
    if len(passages) < 2:
        return passages
    scores = _reranker().predict([(query, p.text) for p in passages])
    rescored = [replace(p, score=float(s)) for s, p in zip(scores, passages, strict=True)]
    return sorted(rescored, key=lambda p: -p.score)


def _in_utc(moment: datetime) -> datetime:
    """Any offset ISO 8601 allows, as UTC: PostgreSQL refuses offsets past 15:59, and a
    date at the edge of the calendar that UTC pushes past it means every or no date."""
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if moment.year == 1 else datetime.max
        return edge.replace(tzinfo=UTC)


def passages_search(
    *,
    query: str,
    collections: Sequence[Collection],
    top_k: int = 10,
    document_ids: Sequence[int] | None = None,
    content_types: Sequence[str] | None = None,
    updated_after: datetime | None = None,
    mode: SearchMode = "hybrid",
    with_similarity: bool = False,
) -> SearchResult:
    """Passages for `query` from the given collections only (the caller checked access).
    `with_similarity` gives the nearest passage's cosine (refusals): the dense list's best
    when the search made one, else one dense query more."""
    collection_ids = [c.pk for c in collections]
    if updated_after is not None:
        recent = Document.objects.filter(
            collection_id__in=collection_ids, updated_at__gte=_in_utc(updated_after)
        ).values_list("pk", flat=True)
        allowed = set(recent) if document_ids is None else set(recent) & set(document_ids)
        document_ids = sorted(allowed)
    if not collection_ids or (document_ids is not None and not document_ids):
        return SearchResult([], 0.0)
    scope = Scope(collection_ids, document_ids=document_ids, content_types=content_types)
    dense = embedder.embed_query(query)
    store = vector_store()
    first = max(top_k * 3, settings.KB_RERANK_CANDIDATES if settings.KB_RERANKER_PATH else 0)
    terms = sparse.encode_query(query)
    if not store.idf_in_store:
        terms = term_stats.query_weights(terms, collection_ids)
    limit = min(first, MAX_CANDIDATES)
    while True:
        hits, nearest = _candidates(
            store, dense=dense, terms=terms, scope=scope, limit=limit, mode=mode
        )
        kept = _cap_per_document(hits)
        if len(kept) >= top_k or len(hits) < limit or limit >= MAX_CANDIDATES:
            break
        # One document holds the best passages: look further down for the others.
        limit = min(limit * 4, MAX_CANDIDATES)
    best = 0.0
    if with_similarity:
        if nearest is None:
            nearest = _best(
                store.search(dense=dense, sparse=None, scope=scope, limit=1, mode="dense")
            )
        best = nearest
    head = settings.KB_RERANK_CANDIDATES if settings.KB_RERANKER_PATH else 0
    passages = _hydrate(kept, wanted=max(top_k, head))
    if head:
        passages = rerank(query, passages[:head]) + passages[head:]
    return SearchResult(passages[:top_k], best)


def _candidates(
    store: VectorStore,
    *,
    dense: Sequence[float],
    terms: SparseVector,
    scope: Scope,
    limit: int,
    mode: SearchMode,
) -> tuple[list[Hit], float | None]:
    """The store's best `limit`, and the nearest passage's cosine when a dense list was
    asked for (None otherwise). A hybrid search asks for each list and fuses them here
    (retrieval.fusion), from at least HYBRID_CANDIDATES of each."""
    if mode != "hybrid":
        hits = store.search(dense=dense, sparse=terms, scope=scope, limit=limit, mode=mode)
        return hits, _best(hits) if mode == "dense" else None
    each = max(limit, HYBRID_CANDIDATES)
    found = {
        m: store.search(dense=dense, sparse=terms, scope=scope, limit=each, mode=m)
        for m in ("dense", "sparse")
    }
    fused = fusion.fuse(
        found["dense"], found["sparse"], dense_weight=settings.KB_HYBRID_DENSE_WEIGHT
    )
    return fused[:limit], _best(found["dense"])


def _best(hits: list[Hit]) -> float:
    return hits[0].score if hits else 0.0


def _hydrate(hits: list[Hit], *, wanted: int) -> list[Passage]:
    """The best `wanted` of the hits (best first) that are passages of a document's live
    version, with their text from the database. Read `wanted` at a time, not all the
    candidates: a search keeps ten of thirty, and reading thirty took twice the CPU of
    reading ten (SciFact's queries). A hit of a version being replaced is made up by the
    next read."""
    passages: list[Passage] = []
    start = 0
    while len(passages) < wanted and start < len(hits):
        more = hits[start : start + wanted - len(passages)]
        start += len(more)
        passages += _live_passages(more)
    return sorted(passages, key=lambda p: -p.score)


def _live_passages(hits: list[Hit]) -> list[Passage]:
    """In SQL of its own: this runs on every search, and the ORM's building of the
    statement and its rows took 0.5 ms of CPU where this takes 0.1 (SciFact's queries).
    The live version is a condition of the join: a version being replaced, for the
    instant both are in the store, is skipped."""
    point_id = Chunk._meta.get_field("point_id")
    # As the database stores and returns the id: text on SQLite, a UUID on PostgreSQL.
    score = {point_id.get_db_prep_value(h.id, connection): h.score for h in hits}
    chunk, document, collection = (
        connection.ops.quote_name(model._meta.db_table) for model in (Chunk, Document, Collection)
    )
    # The models' own tables; every value is a parameter.
    select = (
        "SELECT c.id, c.point_id, c.text, c.page, c.section, d.id, d.title, k.id, k.slug"  # noqa: S608
        f" FROM {chunk} c JOIN {document} d ON d.id = c.document_id"
        " AND d.live_version_id = c.version_id"
        f" JOIN {collection} k ON k.id = d.collection_id"
        f" WHERE c.point_id IN ({', '.join(['%s'] * len(score))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(select, list(score))
        rows = cursor.fetchall()
    return [
        Passage(
            chunk_id=chunk_id,
            document_id=document_id,
            document_title=title,
            collection=slug,
            collection_id=collection_id,
            text=text,
            score=score[point],
            page=page,
            section=section,
        )
        for chunk_id, point, text, page, section, document_id, title, collection_id, slug in rows
    ]


def _cap_per_document(hits: list[Hit]) -> list[Hit]:
    """At most KB_SEARCH_PER_DOCUMENT hits from one document, the best ones."""
    seen: Counter[int] = Counter()
    kept = []
    for hit in hits:
        document = hit.payload[DOCUMENT_ID]
        seen[document] += 1
        if seen[document] <= settings.KB_SEARCH_PER_DOCUMENT:
            kept.append(hit)
    return kept
