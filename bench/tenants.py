"""Filtered search among many kb collections, before and after the tenant key.

    python bench/tenants.py [--collections 200] [--points 30000] [--large 0.4]
                            [--queries 40] [--local-queries 5] [--dim 384]

One store of `--points` random unit vectors over `--collections` kb collections: one
large collection holds the `--large` share, the others split the rest evenly. Each
layout is built in each engine:
- before: `collection_id` indexed as an integer and searched on (kb until the tenant key);
- after: `tenant`, the same id as a string, a keyword index with `is_tenant` (kb now).
The engines: the embedded one (qdrant-edge, Qdrant's own segment code), optimized as
`vectors_optimize` leaves it (HNSW graph and payload indexes built); and qdrant-client's
local mode, which compares the query with every point in numpy, ignores payload indexes
and evaluates filters in Python: it reflects nothing of a server's layout and is here to
show that. Dense search, top 10, for four scopes: one small collection, the large one,
20 collections (a reader of many), every collection; p50 and p95 ms, and recall@10
against exact search over the permitted points. Last, the upgrade of an older store as
kb does it when opening one (edge: a set_payload per collection, the index, the integer
index dropped), timed. Prints a table, saves JSON; the last line is the summary.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import kb_setup, save

LIMIT = 10
BATCH = 1000


def sizes(collections: int, points: int, large: float) -> list[int]:
    big = int(points * large)
    small, extra = divmod(points - big, collections - 1)
    return [big] + [small + (1 if i < extra else 0) for i in range(collections - 1)]


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def corpus(args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors, the kb collection id of each): collection 1 is the large one."""
    owners = np.concatenate(
        [
            np.full(n, c, dtype=np.int64)
            for c, n in enumerate(sizes(args.collections, args.points, args.large), 1)
        ]
    )
    return unit(rng.standard_normal((len(owners), args.dim))), owners


def scopes(collections: int) -> dict[str, list[int]]:
    return {
        "one small collection": [collections],
        "the large collection": [1],
        "20 collections": list(range(collections - 19, collections + 1)),
        "every collection": list(range(1, collections + 1)),
    }


def payload(layout: str, owner: int) -> dict[str, Any]:
    return {"collection_id": owner, "live": 1} | (
        {"tenant": str(owner)} if layout == "after" else {}
    )


def key(layout: str) -> str:
    return "tenant" if layout == "after" else "collection_id"


def values(layout: str, scope: list[int]) -> list[Any]:
    return [str(c) for c in scope] if layout == "after" else scope


def build_edge(path: Path, layout: str, vectors: np.ndarray, owners: np.ndarray) -> Any:
    import qdrant_edge as q

    shard = q.EdgeShard.create(
        str(path),
        q.EdgeConfig(
            vectors={"dense": q.EdgeVectorParams(size=vectors.shape[1], distance=q.Distance.Cosine)}
        ),
    )
    index = (
        q.KeywordIndexParams(is_tenant=True) if layout == "after" else q.PayloadSchemaType.Integer
    )
    shard.update(q.UpdateOperation.create_field_index(key(layout), index))
    shard.update(q.UpdateOperation.create_field_index("live", q.PayloadSchemaType.Integer))
    for start in range(0, len(owners), BATCH):
        shard.update(
            q.UpdateOperation.upsert_points(
                [
                    q.Point(
                        id=i,
                        vector={"dense": vectors[i].tolist()},
                        payload=payload(layout, int(owners[i])),
                    )
                    for i in range(start, min(start + BATCH, len(owners)))
                ]
            )
        )
    shard.optimize()
    return shard


def edge_search(shard: Any, layout: str) -> Callable[[np.ndarray, list[int]], list[int]]:
    import qdrant_edge as q

    def search(query: np.ndarray, scope: list[int]) -> list[int]:
        condition = q.Filter(
            must=[
                q.FieldCondition(key="live", match=q.MatchValue(value=1)),
                q.FieldCondition(key=key(layout), match=q.MatchAny(any=values(layout, scope))),
            ]
        )
        request = q.QueryRequest(
            query=q.Query.Nearest(query.tolist(), using="dense"), filter=condition, limit=LIMIT
        )
        return [int(p.id) for p in shard.query(request)]

    return search


def build_local(path: Path, layout: str, vectors: np.ndarray, owners: np.ndarray) -> Any:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection(
        "kb",
        vectors_config={
            "dense": models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
        },
    )
    for start in range(0, len(owners), BATCH):
        client.upsert(
            "kb",
            points=[
                models.PointStruct(
                    id=i,
                    vector={"dense": vectors[i].tolist()},
                    payload=payload(layout, int(owners[i])),
                )
                for i in range(start, min(start + BATCH, len(owners)))
            ],
        )
    return client


def local_search(client: Any, layout: str) -> Callable[[np.ndarray, list[int]], list[int]]:
    from qdrant_client import models

    def search(query: np.ndarray, scope: list[int]) -> list[int]:
        condition = models.Filter(
            must=[
                models.FieldCondition(key="live", match=models.MatchValue(value=1)),
                models.FieldCondition(
                    key=key(layout), match=models.MatchAny(any=values(layout, scope))
                ),
            ]
        )
        found = client.query_points(
            "kb", query=query.tolist(), using="dense", query_filter=condition, limit=LIMIT
        )
        return [int(p.id) for p in found.points]

    return search


def exact(vectors: np.ndarray, owners: np.ndarray, query: np.ndarray, scope: list[int]) -> set[int]:
    permitted = np.flatnonzero(np.isin(owners, scope))
    scores = vectors[permitted] @ query
    return set(permitted[np.argsort(-scores)[:LIMIT]].tolist())


def measure(
    search: Callable[[np.ndarray, list[int]], list[int]],
    queries: np.ndarray,
    vectors: np.ndarray,
    owners: np.ndarray,
    scope: list[int],
) -> dict[str, float]:
    samples, recalls = [], []
    for query in queries:
        started = time.perf_counter()
        found = search(query, scope)
        samples.append((time.perf_counter() - started) * 1000)
        recalls.append(len(set(found) & exact(vectors, owners, query, scope)) / LIMIT)
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(int(len(ordered) * 0.95) - 1, 0)], 2),
        "recall_at_10": round(statistics.mean(recalls), 3),
    }


def upgrade_seconds(before: Path, dim: int) -> float:
    """kb opening a copy of the edge store made before the tenant key."""
    from ingest.vectors.edge import EdgeStore

    copy = before.parent / "upgraded"
    shutil.copytree(before, copy)
    started = time.perf_counter()
    store = EdgeStore.open(copy, dimensions=dim)
    seconds = time.perf_counter() - started
    assert "tenant" in store.shard.info().payload_schema
    store.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collections", type=int, default=200)
    parser.add_argument("--points", type=int, default=30000)
    parser.add_argument("--large", type=float, default=0.4)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--local-queries", type=int, default=5, help="local mode is slow")
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    kb_setup()  # the edge adapter's write lock lives in a data folder
    rng = np.random.default_rng(7)
    vectors, owners = corpus(args, rng)
    # Near a stored passage, as a question is near its answer.
    near = vectors[rng.choice(len(vectors), args.queries, replace=False)]
    queries = unit(near + rng.standard_normal(near.shape) * 0.5 / np.sqrt(args.dim))
    work = Path(tempfile.mkdtemp(prefix="kb-bench-tenants-"))
    results: dict[str, Any] = {"args": vars(args), "runs": {}}
    rows = []
    try:
        for engine, build, searcher, asked in (
            ("edge", build_edge, edge_search, queries),
            ("local mode", build_local, local_search, queries[: args.local_queries]),
        ):
            for layout in ("before", "after"):
                started = time.perf_counter()
                store = build(
                    work / f"{engine}-{layout}".replace(" ", "-"), layout, vectors, owners
                )
                built = time.perf_counter() - started
                search = searcher(store, layout)
                run: dict[str, Any] = {"build_s": round(built, 1), "scopes": {}}
                for name, scope in scopes(args.collections).items():
                    run["scopes"][name] = measured = measure(search, asked, vectors, owners, scope)
                    rows.append((engine, layout, name, measured))
                store.close()
                results["runs"][f"{engine} {layout}"] = run
        results["upgrade_s"] = round(upgrade_seconds(work / "edge-before", args.dim), 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    large = sizes(args.collections, args.points, args.large)[0]
    print(
        f"{args.points} points, {args.collections} collections (the large: {large}), "
        f"dim {args.dim}, {args.queries} queries"
    )
    print(
        f"{'engine':<11} {'layout':<7} {'scope':<21} {'p50 ms':>8} {'p95 ms':>8} {'recall@10':>10}"
    )
    for engine, layout, name, m in rows:
        p50, p95, recall = m["p50_ms"], m["p95_ms"], m["recall_at_10"]
        print(f"{engine:<11} {layout:<7} {name:<21} {p50:>8} {p95:>8} {recall:>10}")
    print(f"upgrade of the edge store made before (kb opening it): {results['upgrade_s']} s")
    save("tenants", results)
    runs = results["runs"]
    ratio = {
        name: round(
            runs["edge before"]["scopes"][name]["p50_ms"]
            / max(runs["edge after"]["scopes"][name]["p50_ms"], 1e-9),
            2,
        )
        for name in ("one small collection", "20 collections")
    }
    recall = min(s["recall_at_10"] for s in runs["edge after"]["scopes"].values())
    print(
        f"tenants points={args.points} collections={args.collections} "
        f"edge_small_before_over_after={ratio['one small collection']} "
        f"edge_20_before_over_after={ratio['20 collections']} "
        f"edge_recall_after={recall} "
        f"upgrade_s={results['upgrade_s']}"
    )


if __name__ == "__main__":
    main()
