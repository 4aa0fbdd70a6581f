"""A Qdrant server or cluster through qdrant-client (production). Its local mode
(`QdrantClient(path=...)`) speaks the same API, which is how the tests run this code."""

import logging
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models

from ingest.sparse import SparseVector
from ingest.vectors.base import (
    COLLECTION_ID,
    CONTENT_TYPE,
    DOCUMENT_ID,
    INDEXED_FIELDS,
    LIVE,
    TENANT,
    VERSION,
    Hit,
    Point,
    Scope,
    SearchMode,
    tenant_key,
)

DENSE = "dense"
SPARSE = "sparse"
RRF_K = 60  # as the edge adapter; the server's default differs
_SCHEMAS: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
    "tenant": models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
    "integer": models.PayloadSchemaType.INTEGER,
    "keyword": models.PayloadSchemaType.KEYWORD,
}
# The collection's metadata names its layout; without it, a store made before the tenant
# key, upgraded when opened.
LAYOUT = {"kb_layout": 2}
logger = logging.getLogger(__name__)


def _match(field: str, value: Any) -> models.FieldCondition:
    return models.FieldCondition(key=field, match=models.MatchValue(value=value))


def _scope_filter(scope: Scope) -> models.Filter:
    must: list[models.Condition] = [
        _match(LIVE, 1),
        models.FieldCondition(
            key=TENANT, match=models.MatchAny(any=[tenant_key(c) for c in scope.collection_ids])
        ),
    ]
    if scope.document_ids is not None:
        must.append(
            models.FieldCondition(
                key=DOCUMENT_ID, match=models.MatchAny(any=list(scope.document_ids))
            )
        )
    if scope.content_types is not None:
        must.append(
            models.FieldCondition(
                key=CONTENT_TYPE, match=models.MatchAny(any=list(scope.content_types))
            )
        )
    return models.Filter(must=must)


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


class ServerStore:
    def __init__(self, client: QdrantClient, collection: str, *, where: str) -> None:
        self.client = client
        self.collection = collection
        self.where = where  # the URL or local path, never the API key
        self.idf_in_store = False

    @classmethod
    def connect(
        cls,
        *,
        collection: str,
        dimensions: int,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
    ) -> "ServerStore":
        client = QdrantClient(path=path) if path else QdrantClient(url=url, api_key=api_key)
        store = cls(client, collection, where=url or str(path))
        store._ensure(dimensions)
        return store

    def _ensure(self, dimensions: int) -> None:
        if self.client.collection_exists(self.collection):
            config = self.client.get_collection(self.collection).config
            sparse = config.params.sparse_vectors
            self.idf_in_store = (sparse or {})[SPARSE].modifier == models.Modifier.IDF
            if not LAYOUT.items() <= (config.metadata or {}).items():
                self._upgrade()
            return
        self.client.create_collection(
            self.collection,
            vectors_config={
                DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)
            },
            # Term weights come with the query (ingest.term_stats).
            sparse_vectors_config={SPARSE: models.SparseVectorParams()},
            metadata=LAYOUT,
        )
        self._index()

    def _index(self) -> None:
        for field, kind in INDEXED_FIELDS.items():
            self.client.create_payload_index(
                self.collection, field, field_schema=_SCHEMAS[kind], wait=True
            )

    def _upgrade(self) -> None:
        """Give a store made before the tenant key its key and index, a kb collection at a
        time; the layout in the metadata, written last, keeps it from running again."""
        untagged = models.Filter(
            must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=TENANT))],
            must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=COLLECTION_ID))],
        )
        tagged = 0
        while True:
            found, _ = self.client.scroll(
                self.collection, scroll_filter=untagged, limit=1, with_payload=[COLLECTION_ID]
            )
            if not found:
                break
            collection_id = (found[0].payload or {})[COLLECTION_ID]
            self.client.set_payload(
                self.collection,
                payload={TENANT: tenant_key(collection_id)},
                points=models.Filter(must=[_match(COLLECTION_ID, collection_id)]),
                wait=True,
            )
            tagged += 1
        self._index()
        # A server reports its indexes (local mode none): the integer one is not searched.
        if COLLECTION_ID in self.client.get_collection(self.collection).payload_schema:
            self.client.delete_payload_index(self.collection, COLLECTION_ID, wait=True)
        self.client.update_collection(self.collection, metadata=LAYOUT)
        logger.info(
            "%s: gave the passages of %d collections the tenant key", self.describe(), tagged
        )

    def upsert(self, points: Sequence[Point]) -> None:
        self.client.upsert(
            self.collection,
            points=[
                models.PointStruct(
                    id=point.id,
                    vector={DENSE: list(point.dense), SPARSE: _sparse(point.sparse)},
                    payload=point.payload,
                )
                for point in points
            ],
            wait=True,
        )

    def _version_filter(self, document_id: int, version: int) -> models.Filter:
        return models.Filter(must=[_match(DOCUMENT_ID, document_id), _match(VERSION, version)])

    def set_live(self, *, document_id: int, version: int) -> None:
        self.client.set_payload(
            self.collection,
            payload={LIVE: 1},
            points=self._version_filter(document_id, version),
            wait=True,
        )

    def delete(self, *, document_id: int, version: int | None = None) -> None:
        condition = (
            self._version_filter(document_id, version)
            if version is not None
            else models.Filter(must=[_match(DOCUMENT_ID, document_id)])
        )
        self.client.delete(
            self.collection, points_selector=models.FilterSelector(filter=condition), wait=True
        )

    def delete_other_versions(self, *, document_id: int, keep_version: int) -> None:
        condition = models.Filter(
            must=[_match(DOCUMENT_ID, document_id)], must_not=[_match(VERSION, keep_version)]
        )
        self.client.delete(
            self.collection, points_selector=models.FilterSelector(filter=condition), wait=True
        )

    def search(
        self,
        *,
        dense: Sequence[float] | None,
        sparse: SparseVector | None,
        scope: Scope,
        limit: int,
        mode: SearchMode = "hybrid",
        candidates: int = 100,
    ) -> list[Hit]:
        if not scope.collection_ids:
            return []
        condition = _scope_filter(scope)
        if mode == "hybrid":
            prefetch = []
            if dense is not None:
                prefetch.append(
                    models.Prefetch(
                        query=list(dense), using=DENSE, filter=condition, limit=candidates
                    )
                )
            if sparse is not None and sparse.indices:
                prefetch.append(
                    models.Prefetch(
                        query=_sparse(sparse), using=SPARSE, filter=condition, limit=candidates
                    )
                )
            response = self.client.query_points(
                self.collection,
                prefetch=prefetch,
                query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)),
                query_filter=condition,
                limit=limit,
                with_payload=True,
            )
        elif mode == "dense":
            assert dense is not None
            response = self.client.query_points(
                self.collection,
                query=list(dense),
                using=DENSE,
                query_filter=condition,
                limit=limit,
                with_payload=True,
            )
        else:
            if sparse is None or not sparse.indices:
                return []
            response = self.client.query_points(
                self.collection,
                query=_sparse(sparse),
                using=SPARSE,
                query_filter=condition,
                limit=limit,
                with_payload=True,
            )
        return [Hit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in response.points]

    def count(self, *, document_id: int | None = None, live_only: bool = False) -> int:
        must: list[models.Condition] = []
        if document_id is not None:
            must.append(_match(DOCUMENT_ID, document_id))
        if live_only:
            must.append(_match(LIVE, 1))
        result = self.client.count(
            self.collection, count_filter=models.Filter(must=must) if must else None, exact=True
        )
        return result.count

    def describe(self) -> str:
        return f"Qdrant server {self.where}, collection {self.collection}"

    def optimize(self) -> None:
        return None  # a Qdrant server indexes by itself

    def close(self) -> None:
        self.client.close()
