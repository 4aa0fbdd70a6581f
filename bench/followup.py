"""Follow-up questions on the mixed corpus: is the document that answers the second
turn among the passages sent to the model?

    python bench/followup.py [--corpus ../shared/eval/corpus] [--model] [--data DIR]

bench/followup.jsonl holds two-turn conversations written by reading
../shared/eval/corpus: the first question names a topic, the second leans on it and is
ambiguous alone; `gold` is the file that answers the second. The corpus is ingested
through kb's services (a few minutes here; `--data DIR` keeps it there and reuses it).
Each follow-up is asked through `question_answer`, as the API does, with the model
endpoint down, so the passages it would be sent are chosen and audited but no answer is
written. Three ways:
- alone: the follow-up searched by itself (kb before follow-ups were rewritten);
- terms: made standalone with the earlier question's terms (the deterministic fallback);
- model: rewritten by the bundled model first (`--model`; its time bound raised so that
  the machine's load does not decide), then searched.
Prints a table, saves bench/results/followup.json; the last line is the summary.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EVAL, kb_setup, load_folder, read_jsonl, save

CONVERSATIONS = Path(__file__).resolve().parent / "followup.jsonl"
SLUG = "corpus"


def corpus_paths(corpus: Path, data: Path | None) -> tuple[dict[int, str], float]:
    """{document id: path in the corpus}, ingesting it unless `data` holds it already."""
    from ingest.models import Document

    known = dict(Document.objects.filter(collection__slug=SLUG).values_list("pk", "path"))
    if known:
        print(f"reusing the corpus ingested in {data}")
        return known, 0.0
    started = time.perf_counter()
    if not corpus.is_dir():
        raise SystemExit(f"no corpus at {corpus}: pass --corpus")
    paths = load_folder(SLUG, corpus)
    return paths, time.perf_counter() - started


def model_rewrites(conversations: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(query, how, seconds) for each follow-up, rewritten by the bundled model."""
    from django.conf import settings

    from retrieval import followup, llm
    from retrieval.local_llm import LocalLlm

    server = LocalLlm(settings.KB_LOCAL_LLM_PORT)
    settings.LLM_BASE_URLS = [server.url]
    settings.KB_REWRITE_SECONDS = 60.0
    llm._pools.clear()
    rewrites = []
    try:
        for item in conversations:
            start = time.perf_counter()
            rewrite = followup.standalone_query(
                question=item["followup"], history=history(item), pool=llm.pool_for(None)
            )
            rewrites.append((rewrite.query, rewrite.how, time.perf_counter() - start))
    finally:
        server.stop()
        llm._pools.clear()
    return rewrites


def history(item: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": item["first"]}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=EVAL / "corpus")
    parser.add_argument("--model", action="store_true", help="also rewrite with the model")
    parser.add_argument("--data", type=Path, help="a folder to keep the ingested corpus in")
    args = parser.parse_args()
    if args.data:
        args.data.mkdir(parents=True, exist_ok=True)
    kb_setup(args.data)
    from django.conf import settings

    from kb.audit import SYSTEM
    from kb.models import Collection, Role
    from kb.principal import Principal
    from kb.services import member_add, user_create
    from retrieval import llm, services

    conversations = read_jsonl(CONVERSATIONS)
    paths, ingest_seconds = corpus_paths(args.corpus, args.data)
    rewrites = model_rewrites(conversations) if args.model else []
    settings.LLM_BASE_URLS = ["http://127.0.0.1:9/v1"]  # nothing listens: no answers
    llm._pools.clear()
    user, _ = user_create(username=f"bench-{time.time_ns()}", actor=SYSTEM)
    collection = Collection.objects.get(slug=SLUG)
    member_add(collection=collection, user=user, role=Role.READER, actor=SYSTEM)
    principal = Principal(user=user)

    def sent(question: str, turns: list[dict[str, str]]) -> tuple[list[str], str]:
        answer = services.question_answer(principal=principal, question=question, history=turns)
        return [paths[p.document_id] for p in answer.sources], answer.rewrite.query

    ways = ["alone", "terms", *(["model"] if rewrites else [])]
    rows = []
    for n, item in enumerate(conversations):
        row: dict[str, Any] = {"followup": item["followup"], "gold": item["gold"]}
        for way in ways:
            if way == "alone":
                documents, query = sent(item["followup"], [])
            elif way == "terms":
                documents, query = sent(item["followup"], history(item))
            else:
                query, how, seconds = rewrites[n]
                documents, _ = sent(query, [])
                row["model_how"], row["model_seconds"] = how, seconds
            row[way] = {"query": query, "hit": item["gold"] in documents, "sent": documents}
        rows.append(row)

    recall = {w: sum(r[w]["hit"] for r in rows) / len(rows) for w in ways}
    print(f"{len(rows)} two-turn conversations over {len(paths)} documents")
    print(f"{'way':<7} {'gold sent':>9}  what is searched")
    for way, meaning in (
        ("alone", "the follow-up by itself"),
        ("terms", "the follow-up after the earlier question's terms"),
        ("model", "the bundled model's rewrite, else the terms"),
    ):
        if way in recall:
            print(f"{way:<7} {recall[way]:>9.3f}  {meaning}")
    summary: dict[str, Any] = {
        "conversations": len(rows),
        "documents": len(paths),
        "ingest_seconds": ingest_seconds,
        "recall": recall,
    }
    if rewrites:
        summary["model"] = {
            "used": sum(1 for _, how, _ in rewrites if how == "model"),
            "median_seconds": statistics.median(s for _, _, s in rewrites),
            "max_seconds": max(s for _, _, s in rewrites),
        }
        print(
            f"the model's rewrite passed its checks {summary['model']['used']} times of "
            f"{len(rows)}; {summary['model']['median_seconds']:.1f} s median, "
            f"{summary['model']['max_seconds']:.1f} s at most"
        )
    print(f"saved {save('followup', {**summary, 'rows': rows})}")
    print(
        "followup "
        + " ".join(f"recall_{w}={recall[w]:.3f}" for w in ways)
        + f" conversations={len(rows)}"
    )


if __name__ == "__main__":
    main()
