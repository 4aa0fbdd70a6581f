"""Answers end to end on PubMedQA: retrieval, the model, citations, refusals.

    python bench/answers.py [--questions 100]

The 1,000 PubMedQA abstracts are ingested as one collection through kb's services; each
question is asked through `question_answer`, as the API does. The model is whatever
LLM_BASE_URL / LLM_MODEL name, else the bundled SmolLM2-135M, started here.
"""

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EVAL, kb_setup, load_texts, read_jsonl, save

# Questions the PubMedQA abstracts cannot answer: what a refusal should catch.
OFF_TOPIC = [
    "How many days of paid holiday do new employees get?",
    "Where do I submit my travel expense report?",
    "What is the wifi password in the London office?",
    "Who approves purchase orders above ten thousand euros?",
    "When is the next company all-hands meeting?",
    "How do I reset my VPN token?",
    "What is the dress code for client meetings?",
    "Which trains go from Paris to Lyon in the morning?",
    "What is the capital of Australia?",
    "How do I configure a Kubernetes ingress controller?",
    "What time does the canteen close on Fridays?",
    "Can I bring my dog to the office?",
    "What is the deadline for the quarterly sales report?",
    "How do I book a meeting room?",
    "Who won the football world cup in 2010?",
    "What is our policy on working from abroad?",
    "How are bonuses calculated for the sales team?",
    "What is the parental leave policy?",
    "Which laptop models can engineers order?",
    "How do I change my bank details for payroll?",
]

_LABEL = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def label_of(answer: str) -> str:
    """The first yes, no or maybe the answer says; '' when it says none."""
    found = _LABEL.search(answer)
    return found.group(1).lower() if found else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=100)
    args = parser.parse_args()
    kb_setup()
    from django.conf import settings

    from kb.audit import SYSTEM
    from kb.models import Collection, Role
    from kb.principal import Principal
    from kb.services import member_add, user_create
    from retrieval import llm, services

    server = None
    if settings.KB_LOCAL_LLM:
        from retrieval.local_llm import LocalLlm

        server = LocalLlm(settings.KB_LOCAL_LLM_PORT)
    corpus = read_jsonl(EVAL / "pubmedqa" / "corpus.jsonl")
    started = time.perf_counter()
    names = load_texts(
        "pubmedqa", {d["_id"]: f"# {d.get('title') or ''}\n\n{d['text']}" for d in corpus}
    )
    ingest_seconds = time.perf_counter() - started
    user = user_create(username="bench", actor=SYSTEM)[0]
    member_add(
        collection=Collection.objects.get(slug="pubmedqa"),
        user=user,
        role=Role.READER,
        actor=SYSTEM,
    )
    principal = Principal(user=user)
    rows: list[dict[str, Any]] = []
    try:
        for item in read_jsonl(EVAL / "pubmedqa" / "test500.jsonl")[: args.questions]:
            gold = set(item["gold_doc_ids"])
            start = time.perf_counter()
            answer = services.question_answer(principal=principal, question=item["question"])
            first_token = None
            done: dict[str, Any] = {}
            cited: list[Any] = []
            for name, data in answer.events():
                if name == "token" and first_token is None:
                    first_token = time.perf_counter() - start
                elif name == "citations":
                    cited = data
                elif name == "done":
                    done = data
            rows.append(
                {
                    "id": item["id"],
                    "gold_retrieved": bool(gold & {names[p.document_id] for p in answer.sources}),
                    "gold_cited": bool(gold & {names[c.passage.document_id] for c in cited}),
                    "refused": done["refused"],
                    "best_similarity": answer.best_similarity,
                    "label": label_of(done["answer"]),
                    "gold_label": item["final_decision"],
                    "ttft_ms": (first_token or 0.0) * 1000,
                    "seconds": time.perf_counter() - start,
                }
            )
    finally:
        if server:
            server.stop()
    answered = [r for r in rows if not r["refused"]]
    from retrieval.search import passages_search

    pubmed = [Collection.objects.get(slug="pubmedqa")]
    off_topic = [
        passages_search(query=q, collections=pubmed, top_k=1, with_similarity=True).best_similarity
        for q in OFF_TOPIC
    ]
    on_topic = sorted(r["best_similarity"] for r in rows)

    def share(key: str, among: list[dict[str, Any]]) -> float:
        return sum(1 for r in among if r[key]) / max(len(among), 1)

    summary = {
        "model": llm.pool_for(None).model,
        "questions": len(rows),
        "documents": len(corpus),
        "ingest_seconds": ingest_seconds,
        "gold_retrieved": share("gold_retrieved", answered),
        "gold_cited": share("gold_cited", answered),
        "refused": share("refused", rows),
        "agreement": sum(1 for r in answered if r["label"] == r["gold_label"])
        / max(len(answered), 1),
        "ttft_ms": statistics.median(r["ttft_ms"] for r in answered) if answered else 0.0,
        "median_seconds": statistics.median(r["seconds"] for r in rows),
        "threshold": settings.KB_REFUSAL_THRESHOLD,
        "calibration": {
            "answerable_best_similarity_p05": on_topic[len(on_topic) // 20],
            "answerable_best_similarity_min": on_topic[0],
            "off_topic_best_similarity_max": max(off_topic),
            "off_topic_best_similarity_median": statistics.median(off_topic),
            "off_topic_refused": sum(1 for s in off_topic if s < settings.KB_REFUSAL_THRESHOLD)
            / len(off_topic),
        },
    }
    print(f"model {summary['model']}; {len(rows)} questions over {len(corpus)} abstracts")
    for key in ("gold_retrieved", "gold_cited", "refused", "agreement"):
        print(f"{key:<15} {summary[key]:.3f}")
    print(
        f"{'ttft_ms':<15} {summary['ttft_ms']:.0f} (median); "
        f"answer {summary['median_seconds']:.1f} s"
    )
    calibration = summary["calibration"]
    print(
        f"refusal threshold {settings.KB_REFUSAL_THRESHOLD}: answerable questions' best "
        f"similarity p05={calibration['answerable_best_similarity_p05']:.3f} "
        f"min={calibration['answerable_best_similarity_min']:.3f}; off-topic median="
        f"{calibration['off_topic_best_similarity_median']:.3f} "
        f"max={calibration['off_topic_best_similarity_max']:.3f}, "
        f"{calibration['off_topic_refused']:.0%} refused"
    )
    print(f"saved {save('answers', {**summary, 'rows': rows})}")
    print(
        f"answers gold_retrieved={summary['gold_retrieved']:.3f} "
        f"gold_cited={summary['gold_cited']:.3f} refused={summary['refused']:.3f} "
        f"agreement={summary['agreement']:.3f} "
        f"ttft_ms={summary['ttft_ms']:.0f}"
    )


if __name__ == "__main__":
    main()
