"""Search latency over HTTP against the same work done directly, in one run.

    python bench/search_latency.py [--data DIR] [--requests 200]

Direct: query embedding + the hybrid Qdrant query, in this process. HTTP: POST
/api/v1/search with a bearer token against `manage.py serve` (uvicorn, one process,
the embedded default), which adds authentication, access, passages from the database
and the audit row. Both with 1 and 8 concurrent clients, on the SciFact collection.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EVAL, ROOT, kb_setup, load_texts, read_jsonl, save

PORT = 8765


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95) - 1] * 1000,
    }


def timed_runs(work: Any, queries: list[str], clients: int) -> list[float]:
    def one(query: str) -> float:
        start = time.perf_counter()
        work(query)
        return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, queries))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="a data folder with the SciFact collection")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    data = kb_setup(args.data)
    from ingest import embedder, sparse
    from ingest.vectors import vector_store, vector_store_close
    from ingest.vectors.base import Scope
    from kb.audit import SYSTEM
    from kb.models import Collection, Role, TokenScope
    from kb.services import member_add, token_create, user_create

    if not Collection.objects.filter(slug="beir").exists():
        corpus = read_jsonl(EVAL / "scifact" / "corpus.jsonl")
        load_texts("beir", {d["_id"]: f"# {d['title']}\n\n{d['text']}" for d in corpus})
    collection = Collection.objects.get(slug="beir")
    queries = [q["text"] for q in read_jsonl(EVAL / "scifact" / "queries.jsonl")]
    queries = (queries * (args.requests // len(queries) + 1))[: args.requests]

    def direct(query: str) -> None:
        dense = embedder.embed([query])[0].tolist()
        vector_store().search(
            dense=dense, sparse=sparse.encode_query(query), scope=Scope([collection.pk]), limit=10
        )

    direct(queries[0])  # warm: model loaded
    results: dict[str, Any] = {"requests": len(queries)}
    for clients in (1, 8):
        results[f"direct_{clients}"] = percentiles(timed_runs(direct, queries, clients))
    user = user_create(username="bench", actor=SYSTEM)[0]
    member_add(collection=collection, user=user, role=Role.READER, actor=SYSTEM)
    _, secret = token_create(
        user=user, collections=[collection], scope=TokenScope.READ, actor=SYSTEM
    )
    vector_store_close()  # the server becomes the store's one owner
    env = {**os.environ, "KB_DATA_DIR": str(data), "LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(PORT)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{PORT}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                http.get("/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

        def over_http(query: str) -> None:
            response = http.post("/api/v1/search", json={"query": query, "top_k": 10})
            response.raise_for_status()

        over_http(queries[0])  # warm: the server's model loaded
        for clients in (1, 8):
            results[f"http_{clients}"] = percentiles(timed_runs(over_http, queries, clients))
    finally:
        server.terminate()
        server.wait(30)
    print(f"{'path':<10} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for clients in (1, 8):
        for path in ("direct", "http"):
            row = results[f"{path}_{clients}"]
            print(f"{path:<10} {clients:>7} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f}")
    ratios = {c: results[f"http_{c}"]["p95_ms"] / results[f"direct_{c}"]["p95_ms"] for c in (1, 8)}
    results["p95_ratio"] = ratios
    print(f"saved {save('search_latency', results)}")
    worst = max(ratios, key=lambda c: ratios[c])
    print(
        f"search p95_ratio={ratios[worst]:.2f} p50_ms={results[f'http_{worst}']['p50_ms']:.0f} "
        f"p95_ms={results[f'http_{worst}']['p95_ms']:.0f}"
    )


if __name__ == "__main__":
    main()
