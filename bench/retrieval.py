"""Retrieval quality on a BEIR data set, through kb's real ingestion and search code.

    python bench/retrieval.py [--dataset ../shared/eval/scifact] [--limit N]

nDCG@10 and recall@100 (test split) for dense only, BM25 only and hybrid (retrieval.fusion).
Each corpus entry becomes a Markdown document (its title a heading, so it is embedded as
context); passages are mapped back to their documents, one rank per document.
"""

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EVAL, kb_setup, load_texts, read_jsonl, read_qrels, save

if TYPE_CHECKING:
    from retrieval.search import SearchMode

MODES: "tuple[SearchMode, ...]" = ("hybrid", "dense", "sparse")


def ndcg_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    gains = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:10]))
    ideal = sum(
        g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:10])
    )
    return gains / ideal if ideal else 0.0


def recall_at_100(ranked: list[str], relevant: dict[str, int]) -> float:
    hits = sum(1 for doc in ranked[:100] if relevant.get(doc, 0) > 0)
    return hits / sum(1 for g in relevant.values() if g > 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=EVAL / "scifact")
    parser.add_argument("--limit", type=int, help="only the first N corpus entries (a smoke run)")
    parser.add_argument(
        "--data", type=Path, help="keep kb's data here (search_latency.py reuses it)"
    )
    args = parser.parse_args()
    corpus = read_jsonl(args.dataset / "corpus.jsonl")[: args.limit]
    queries = {q["_id"]: q["text"] for q in read_jsonl(args.dataset / "queries.jsonl")}
    qrels = read_qrels(args.dataset / "qrels" / "test.tsv")
    data = kb_setup(args.data)
    from django.conf import settings

    from ingest.models import Document
    from kb.models import Collection
    from retrieval.search import passages_search

    started = time.perf_counter()
    if args.data and Collection.objects.filter(slug="beir").exists():  # an earlier run's
        names = {
            pk: path.removesuffix(".md")
            for pk, path in Document.objects.filter(collection__slug="beir").values_list(
                "pk", "path"
            )
        }
    else:
        names = load_texts(
            "beir", {d["_id"]: f"# {d.get('title') or d['_id']}\n\n{d['text']}" for d in corpus}
        )
    ingest_seconds = time.perf_counter() - started
    collection = Collection.objects.get(slug="beir")
    settings.KB_SEARCH_PER_DOCUMENT = 1  # one rank per document, as the judgements are
    results = {}
    for mode in MODES:
        ndcg, recall, seconds = [], [], []
        for query_id, relevant in qrels.items():
            start = time.perf_counter()
            found = passages_search(
                query=queries[query_id], collections=[collection], top_k=100, mode=mode
            )
            seconds.append(time.perf_counter() - start)
            ranked = [names[p.document_id] for p in found.passages]
            ndcg.append(ndcg_at_10(ranked, relevant))
            recall.append(recall_at_100(ranked, relevant))
        results[mode] = {
            "ndcg@10": sum(ndcg) / len(ndcg),
            "recall@100": sum(recall) / len(recall),
            "median_query_ms": sorted(seconds)[len(seconds) // 2] * 1000,
        }
    report = {
        "dataset": str(args.dataset),
        "documents": len(corpus),
        "queries": len(qrels),
        "ingest_seconds": ingest_seconds,
        "modes": results,
    }
    print(f"{'mode':<8} {'nDCG@10':>8} {'recall@100':>10} {'median ms':>10}")
    for mode, row in results.items():
        print(
            f"{mode:<8} {row['ndcg@10']:>8.4f} {row['recall@100']:>10.4f} "
            f"{row['median_query_ms']:>10.1f}"
        )
    print(
        f"{len(corpus)} documents ingested in {ingest_seconds:.0f} s into {data}; "
        f"{len(qrels)} queries"
    )
    print(f"saved {save('retrieval', report)}")
    print(
        f"ndcg@10 hybrid={results['hybrid']['ndcg@10']:.4f} "
        f"dense={results['dense']['ndcg@10']:.4f} bm25={results['sparse']['ndcg@10']:.4f}"
    )


if __name__ == "__main__":
    main()
