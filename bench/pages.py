"""Server time of every web page on the SciFact collection (5,183 documents).

    python bench/pages.py [--data DIR] [--repeat 15]

Each page is rendered through Django's full request stack (middleware, session, access
checks, database, template) in this process, `--repeat` times after one warm-up, and
timed from request to rendered response: the server's share of a page view, without
network or browser. Side by side, in the same run: Django's own admin index and a bare
JSON view, the floor any page stands on. Target: no page's median above 300 ms.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EVAL, kb_setup, load_texts, read_jsonl, save

TARGET_MS = 300.0


def timed(client: Any, path: str, repeat: int) -> dict[str, float]:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "max_ms": round(samples[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="a data folder with the SciFact collection")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    kb_setup(args.data)
    from django.test import Client
    from django.test.utils import setup_test_environment

    from ingest.models import Chunk, Document
    from kb.audit import SYSTEM
    from kb.models import AuditEvent, Collection, Role
    from kb.services import member_add, user_create
    from retrieval.models import Conversation, Exchange

    setup_test_environment()  # allows the test client's "testserver" host
    if not Collection.objects.filter(slug="beir").exists():
        corpus = read_jsonl(EVAL / "scifact" / "corpus.jsonl")
        load_texts("beir", {d["_id"]: f"# {d['title']}\n\n{d['text']}" for d in corpus})
    collection = Collection.objects.get(slug="beir")
    admin = user_create(username="bench-admin", superuser=True, actor=SYSTEM)[0]
    member_add(collection=collection, user=admin, role=Role.OWNER, actor=SYSTEM)
    client = Client()
    client.force_login(admin)
    queries = [q["text"] for q in read_jsonl(EVAL / "scifact" / "queries.jsonl")[:30]]
    for query in queries:  # an audit trail and a conversation to show
        client.get("/search", {"q": query})
    chunk = Chunk.objects.filter(version__document__collection=collection).order_by("pk")[500]
    conversation = Conversation.objects.create(user=admin, title=queries[0])
    for i, query in enumerate(queries[:10]):
        Exchange.objects.create(
            conversation=conversation,
            query_id=f"bench{i}",
            question=query,
            answer=f"{chunk.text[:300]} [1]",
            citations=[
                {
                    "n": 1,
                    "chunk_id": chunk.pk,
                    "collection_id": collection.pk,
                    "document_title": "t",
                    "page": None,
                    "quote": chunk.text[:200],
                    "url": f"/passages/{chunk.pk}",
                }
            ],
        )
    documents = Document.objects.filter(collection=collection).count()
    last_page = (documents + 49) // 50
    event = AuditEvent.objects.filter(action="search").latest("seq")
    pages = {
        "baseline: bare JSON view": "/healthz",
        "baseline: Django admin index": "/admin/",
        "ask": "/",
        "conversation (10 answers)": f"/conversations/{conversation.pk}",
        "search": f"/search?q={queries[1]}",
        "passage": f"/passages/{chunk.pk}",
        "collections": "/collections/",
        "collection, first page": "/collections/beir/",
        "collection, last page": f"/collections/beir/?page={last_page}",
        "documents table (live refresh)": "/collections/beir/documents",
        "members": "/collections/beir/members",
        "settings": "/collections/beir/settings",
        "tokens": "/tokens/",
        "audit trail": "/audit/",
        "audit trail, filtered": "/audit/?action=search&user=bench-admin",
        "audit row": f"/audit/{event.seq}",
        "status": "/status/",
    }
    results = {name: timed(client, path, args.repeat) for name, path in pages.items()}
    width = max(map(len, results))
    print(f"{'page':<{width}}  {'p50 ms':>8}  {'max ms':>8}")
    for name, row in results.items():
        print(f"{name:<{width}}  {row['p50_ms']:>8.1f}  {row['max_ms']:>8.1f}")
    product = {k: v for k, v in results.items() if not k.startswith("baseline")}
    worst_name, worst = max(product.items(), key=lambda item: item[1]["p50_ms"])
    summary = {
        "documents": documents,
        "repeat": args.repeat,
        "pages": results,
        "worst_page": worst_name,
        "worst_p50_ms": worst["p50_ms"],
        "target_ms": TARGET_MS,
        "met": worst["p50_ms"] <= TARGET_MS,
    }
    save("pages", summary)
    print(
        f"pages documents={documents} worst={worst_name!r} worst_p50_ms={worst['p50_ms']} "
        f"target_ms={TARGET_MS:.0f} met={summary['met']}"
    )


if __name__ == "__main__":
    main()
