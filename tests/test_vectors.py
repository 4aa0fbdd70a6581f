"""One contract, two back ends: Qdrant's in-process engine (the embedded default) and
qdrant-client, whose local mode stands in for a Qdrant server here."""

import subprocess
import sys

import numpy as np
import pytest

from ingest.sparse import encode_document, encode_query
from ingest.vectors.base import Hit, Point, Scope, point_payload
from ingest.vectors.edge import EdgeStore
from ingest.vectors.server import ServerStore

DIM = 8
TEXTS = {
    (1, 10, 1): "annual leave policy for employees",
    (1, 10, 2): "annual leave policy, revised edition",
    (1, 11, 1): "server rack cooling and power budget",
    (2, 20, 1): "annual leave for contractors in the secret division",
}


def vector(seed: int) -> list[float]:
    values = np.random.default_rng(seed).standard_normal(DIM)
    return (values / np.linalg.norm(values)).tolist()


def point(collection: int, document: int, version: int, index: int = 0, live: bool = True) -> Point:
    text = TEXTS[(collection, document, version)]
    return Point(
        id=f"00000000-0000-0000-0000-{collection:04d}{document:04d}{version:04d}",
        dense=vector(document * 10 + version),
        sparse=encode_document(text),
        payload={
            **point_payload(
                collection_id=collection,
                document_id=document,
                version=version,
                chunk_id=document * 10 + version,
                page=1,
                content_type="text/plain",
            ),
            "live": int(live),
        },
    )


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    opened: EdgeStore | ServerStore
    if request.param == "edge":
        opened = EdgeStore.open(tmp_path / "edge", dimensions=DIM)
    else:
        opened = ServerStore.connect(
            path=str(tmp_path / "local"), collection="kb-test", dimensions=DIM
        )
    opened.upsert([point(1, 10, 1), point(1, 11, 1), point(2, 20, 1)])
    yield opened
    opened.close()


def docs(hits) -> list[int]:
    return sorted(h.payload["document_id"] for h in hits)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_search_sees_only_permitted_collections(store, mode):
    hits = store.search(
        dense=vector(101),
        sparse=encode_query("annual leave"),
        scope=Scope([1]),
        limit=10,
        mode=mode,
    )
    assert hits and all(h.payload["collection_id"] == 1 for h in hits)
    everything = store.search(
        dense=vector(101),
        sparse=encode_query("annual leave"),
        scope=Scope([1, 2]),
        limit=10,
        mode=mode,
    )
    assert 20 in docs(everything)


def test_nothing_permitted_finds_nothing(store):
    assert (
        store.search(dense=vector(1), sparse=encode_query("leave"), scope=Scope([]), limit=10) == []
    )


def test_sparse_ranks_the_matching_words_first(store):
    hits = store.search(
        dense=None,
        sparse=encode_query("cooling power"),
        scope=Scope([1, 2]),
        limit=3,
        mode="sparse",
    )
    assert hits[0].payload["document_id"] == 11


def test_hybrid_fuses_both_rankings(store):
    hits = store.search(
        dense=vector(111), sparse=encode_query("annual leave"), scope=Scope([1]), limit=2
    )
    # Dense finds document 11 (its own vector), sparse finds document 10 (the words).
    assert docs(hits) == [10, 11]


def test_scope_narrows_to_documents_and_types(store):
    hits = store.search(
        dense=vector(1), sparse=None, scope=Scope([1, 2], document_ids=[11]), limit=10, mode="dense"
    )
    assert docs(hits) == [11]
    none = store.search(
        dense=vector(1), sparse=None, scope=Scope([1], content_types=["application/pdf"]), limit=10
    )
    assert none == []


def test_a_version_is_invisible_until_it_goes_live(store):
    store.upsert([point(1, 10, 2, live=False)])
    assert store.count(document_id=10) == 2
    assert store.count(document_id=10, live_only=True) == 1
    found = store.search(
        dense=None,
        sparse=encode_query("annual leave policy"),
        scope=Scope([1]),
        limit=10,
        mode="sparse",
    )
    assert [h.payload["version"] for h in found] == [1]
    store.set_live(document_id=10, version=2)
    store.delete_other_versions(document_id=10, keep_version=2)
    found = store.search(
        dense=None,
        sparse=encode_query("annual leave policy"),
        scope=Scope([1]),
        limit=10,
        mode="sparse",
    )
    assert [h.payload["version"] for h in found] == [2]
    assert store.count(document_id=10) == 1


def test_upsert_is_idempotent_and_delete_removes_everything(store):
    store.upsert([point(1, 11, 1)])
    assert store.count() == 3
    store.delete(document_id=11)
    assert store.count(document_id=11) == 0
    assert store.count() == 2
    store.delete(document_id=20, version=1)
    assert store.count() == 1


def test_edge_store_admits_one_process(tmp_path):
    store = EdgeStore.open(tmp_path / "edge", dimensions=DIM)
    try:
        code = (
            "import sys; from pathlib import Path\n"
            "from ingest.vectors import StoreBusy\n"
            "from ingest.vectors.edge import EdgeStore\n"
            "try:\n    EdgeStore.open(Path(sys.argv[1]), dimensions=8)\n"
            "except StoreBusy as e:\n    print('busy:', e)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "edge")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "busy: the vector store" in result.stdout
    finally:
        store.close()


def test_the_store_weighs_terms_only_as_the_query_says(store):
    # No IDF of its own: a sparse score is the dot product with the weights sent.
    terms = encode_query("cooling")
    (hit,) = store.search(dense=None, sparse=terms, scope=Scope([1]), limit=5, mode="sparse")
    doubled = type(terms)(terms.indices, [2 * v for v in terms.values])
    (again,) = store.search(dense=None, sparse=doubled, scope=Scope([1]), limit=5, mode="sparse")
    assert store.idf_in_store is False
    assert again.score == pytest.approx(2 * hit.score)
    stored = encode_document(TEXTS[(1, 11, 1)])
    weight = dict(zip(stored.indices, stored.values, strict=True))[terms.indices[0]]
    assert hit.score == pytest.approx(terms.values[0] * weight, rel=1e-4)


def test_a_store_made_with_qdrants_idf_says_so(tmp_path):
    import qdrant_client
    import qdrant_edge as q

    edge = q.EdgeShard.create(
        str(tmp_path / "edge"),
        q.EdgeConfig(
            vectors={"dense": q.EdgeVectorParams(size=DIM, distance=q.Distance.Cosine)},
            sparse_vectors={"sparse": q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        ),
    )
    edge.close()
    assert EdgeStore.open(tmp_path / "edge", dimensions=DIM).idf_in_store is True
    client = qdrant_client.QdrantClient(path=str(tmp_path / "local"))
    client.create_collection(
        "kb-old",
        vectors_config={
            "dense": qdrant_client.models.VectorParams(
                size=DIM, distance=qdrant_client.models.Distance.COSINE
            )
        },
        sparse_vectors_config={
            "sparse": qdrant_client.models.SparseVectorParams(
                modifier=qdrant_client.models.Modifier.IDF
            )
        },
    )
    client.close()
    old = ServerStore.connect(path=str(tmp_path / "local"), collection="kb-old", dimensions=DIM)
    assert old.idf_in_store is True


# --- a store made before the tenant key -------------------------------------------------

# The layout kb made before: collection_id alone, indexed as an integer; no tenant key.
OLD_INDEXES = {"collection_id": "integer", "document_id": "integer", "live": "integer"}


def old_points() -> list[Point]:
    points = [point(1, 10, 1), point(1, 11, 1), point(2, 20, 1)]
    for p in points:
        del p.payload["tenant"]
    return points


def make_old_edge(path) -> None:
    import qdrant_edge as q

    shard = q.EdgeShard.create(
        str(path),
        q.EdgeConfig(
            vectors={"dense": q.EdgeVectorParams(size=DIM, distance=q.Distance.Cosine)},
            sparse_vectors={"sparse": q.EdgeSparseVectorParams()},
        ),
    )
    for field in OLD_INDEXES:
        shard.update(q.UpdateOperation.create_field_index(field, q.PayloadSchemaType.Integer))
    shard.update(
        q.UpdateOperation.upsert_points(
            [
                q.Point(
                    id=p.id,
                    vector={
                        "dense": list(p.dense),
                        "sparse": q.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                    },
                    payload=p.payload,
                )
                for p in old_points()
            ]
        )
    )
    shard.close()


def make_old_local(path) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection(
        "kb-test",
        vectors_config={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
    )
    for field, kind in OLD_INDEXES.items():
        client.create_payload_index("kb-test", field, field_schema=models.PayloadSchemaType(kind))
    client.upsert(
        "kb-test",
        points=[
            models.PointStruct(
                id=p.id,
                vector={
                    "dense": list(p.dense),
                    "sparse": models.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=p.payload,
            )
            for p in old_points()
        ],
    )
    client.close()


def assert_tenant_layout(store: EdgeStore | ServerStore) -> None:
    if isinstance(store, EdgeStore):
        import qdrant_edge as q

        schema = store.shard.info().payload_schema
        params = schema["tenant"].params
        assert isinstance(params, q.KeywordIndexParams) and params.is_tenant is True
        assert "collection_id" not in schema  # replaced: searches filter on the tenant key
    else:  # local mode reports no indexes: the layout kb records
        assert store.client.get_collection("kb-test").config.metadata == {"kb_layout": 2}


def leave(store: EdgeStore | ServerStore, collections: list[int]) -> list[Hit]:
    return store.search(
        dense=None,
        sparse=encode_query("annual leave"),
        scope=Scope(collections),
        limit=10,
        mode="sparse",
    )


def open_store(kind: str, tmp_path) -> EdgeStore | ServerStore:
    if kind == "edge":
        return EdgeStore.open(tmp_path / "edge", dimensions=DIM)
    return ServerStore.connect(path=str(tmp_path / "local"), collection="kb-test", dimensions=DIM)


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_an_older_store_gets_the_tenant_key_once_when_opened(kind, tmp_path):
    if kind == "edge":
        make_old_edge(tmp_path / "edge")
    else:
        make_old_local(tmp_path / "local")
    store = open_store(kind, tmp_path)
    hits = leave(store, [1])
    assert docs(hits) == [10]
    assert [h.payload["tenant"] for h in hits] == ["1"]
    assert docs(leave(store, [1, 2])) == [10, 20]
    assert_tenant_layout(store)
    # A passage written by the old code after the upgrade stays as it is: not run twice.
    late = point(2, 20, 1)
    del late.payload["tenant"]
    store.upsert(
        [
            Point(
                id="00000000-0000-0000-0000-999999999999",
                dense=late.dense,
                sparse=late.sparse,
                payload=late.payload,
            )
        ]
    )
    store.close()
    store = open_store(kind, tmp_path)
    assert store.count(document_id=20) == 2
    assert docs(leave(store, [2])) == [20]
    store.close()


def test_a_new_store_is_made_with_the_tenant_key(store):
    assert_tenant_layout(store)
