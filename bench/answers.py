"""Answers end to end on PubMedQA: retrieval, the model, citations, refusals.

    python bench/answers.py [--questions 100] [--model NAME ...] [--concurrency N]

The 1,000 PubMedQA abstracts are ingested as one collection through kb's services; each
question is asked through `question_answer`, as the API does. The model is whatever
LLM_BASE_URL / LLM_MODEL name, else the bundled model (KB_LOCAL_MODEL), started here.
`--model NAME` (a KB_LOCAL_MODEL value, repeatable) runs the same questions with each
bundled model in turn, over the one ingested collection, and prints a row per model.
`--concurrency N` asks N questions at a time (as N people would), through kb's line for
the model (KB_LLM_SLOTS, KB_ANSWER_MAX_WAIT_SECONDS): time to first token p50 and p95
(from the question, waiting included), errors, and 429s (`busy`) counted apart.
"""

import argparse
import math
import os
import re
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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


def spread(items: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` questions taken at even steps through the file: its first 100 are all
    "yes", so a prefix would reward a model that always says yes."""
    return items[:: max(len(items) // max(count, 1), 1)][:count]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="a bundled model (KB_LOCAL_MODEL value); repeat to compare them in one run",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="questions asked at a time (default 1)"
    )
    args = parser.parse_args()
    kb_setup()
    from django.conf import settings

    from kb.audit import SYSTEM
    from kb.models import Collection, Role
    from kb.principal import Principal
    from kb.services import member_add, user_create
    from retrieval.local_models import ModelUnavailable, model_resolve

    if args.model and not settings.KB_LOCAL_LLM:
        parser.error("--model runs the bundled models: unset LLM_BASE_URL")
    try:
        # None: the endpoints LLM_BASE_URL names, not a bundled model.
        models: list[Any] = (
            [
                model_resolve(name, cache_dir=settings.KB_MODEL_CACHE_DIR)
                for name in args.model or [settings.KB_LOCAL_MODEL]
            ]
            if settings.KB_LOCAL_LLM
            else [None]
        )
    except ModelUnavailable as error:
        parser.error(str(error))
    corpus = read_jsonl(EVAL / "pubmedqa" / "corpus.jsonl")
    started = time.perf_counter()
    names = load_texts(
        "pubmedqa", {d["_id"]: f"# {d.get('title') or ''}\n\n{d['text']}" for d in corpus}
    )
    ingest_seconds = time.perf_counter() - started
    user = user_create(username="bench", actor=SYSTEM)[0]
    pubmed = Collection.objects.get(slug="pubmedqa")
    member_add(collection=pubmed, user=user, role=Role.READER, actor=SYSTEM)
    questions = spread(read_jsonl(EVAL / "pubmedqa" / "test500.jsonl"), args.questions)
    runs = [
        run(Principal(user=user), questions, names, model, args.concurrency) for model in models
    ]
    calibration = calibrate(pubmed, runs[0]["rows"], settings.KB_REFUSAL_THRESHOLD)
    labels = Counter(q["final_decision"] for q in questions)
    always_yes = labels["yes"] / max(len(questions), 1)
    print(
        f"{len(questions)} questions over {len(corpus)} abstracts "
        f"({', '.join(f'{n} {label}' for label, n in labels.most_common())}: "
        f"always answering yes scores {always_yes:.3f})"
    )
    print(
        f"{'model':<20} {'agreement':>9} {'gold_cited':>10} {'unsupported':>11} "
        f"{'refused':>7} {'ttft_ms':>8} {'tok_s':>6}"
    )
    for r in runs:
        print(
            f"{r['model']:<20} {r['agreement']:>9.3f} {r['gold_cited']:>10.3f} "
            f"{r['unsupported']:>11.2f} {r['refused']:>7.3f} {r['ttft_ms']:>8.0f} "
            f"{r['tok_s']:>6.1f}"
        )
    print(
        "gold abstract among the passages sent: "
        + ", ".join(f"{r['model']} {r['gold_retrieved']:.3f}" for r in runs)
    )
    print(
        f"refusal threshold {settings.KB_REFUSAL_THRESHOLD}: answerable questions' best "
        f"similarity p05={calibration['answerable_best_similarity_p05']:.3f} "
        f"min={calibration['answerable_best_similarity_min']:.3f}; off-topic median="
        f"{calibration['off_topic_best_similarity_median']:.3f} "
        f"max={calibration['off_topic_best_similarity_max']:.3f}, "
        f"{calibration['off_topic_refused']:.0%} refused"
    )
    results = {
        "questions": len(questions),
        "documents": len(corpus),
        "ingest_seconds": ingest_seconds,
        "threshold": settings.KB_REFUSAL_THRESHOLD,
        "slots": settings.KB_LLM_SLOTS,
        "max_wait_seconds": settings.KB_ANSWER_MAX_WAIT_SECONDS,
        "always_yes_agreement": always_yes,
        "calibration": calibration,
        "models": runs,
    }
    # A concurrent run keeps its own file: the sequential quality run's stays.
    name = "answers" if args.concurrency == 1 else "answers_concurrency"
    print(f"saved {save(name, results)}")
    for r in runs:
        print(
            f"answers {r['model']} agreement={r['agreement']:.3f} "
            f"gold_cited={r['gold_cited']:.3f} unsupported={r['unsupported']:.2f} "
            f"ttft_ms={r['ttft_ms']:.0f} tok_s={r['tok_s']:.1f}"
            + (
                f" concurrency={args.concurrency} ttft_p50_ms={r['ttft_p50_ms']:.0f} "
                f"ttft_p95_ms={r['ttft_p95_ms']:.0f} errors={r['errors']} busy={r['busy']} "
                f"load={r['load']}"
                if args.concurrency > 1
                else ""
            )
        )


def ask_one(principal: Any, item: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    """One question asked as the API does: its row ("busy" for a 429, "error" when the
    model failed)."""
    from django.db import connection

    from retrieval import scoring, services
    from retrieval.llm import LlmUnavailable

    gold = set(item["gold_doc_ids"])
    try:
        answer = services.question_answer(principal=principal, question=item["question"])
        observed = scoring.answer_observe(answer)
    except services.ModelBusy:
        return {"id": item["id"], "busy": True}
    except LlmUnavailable as error:
        return {"id": item["id"], "error": str(error)}
    finally:
        connection.close()  # each thread's own
    return {
        "id": item["id"],
        **observed.as_row(),
        "gold_retrieved": bool(gold & {names[d] for d in observed.documents_sent}),
        "gold_cited": bool(gold & {names[d] for d in observed.documents_cited}),
        "best_similarity": answer.best_similarity,
        "answer": observed.answer,
        "label": label_of(observed.answer),
        "gold_label": item["final_decision"],
    }


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (0 when there are none)."""
    if not values:
        return 0.0
    return sorted(values)[max(0, math.ceil(share * len(values)) - 1)]


def run(
    principal: Any,
    questions: list[dict[str, Any]],
    names: dict[int, str],
    model: Any,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Every question asked of one model, `concurrency` at a time: its summary, with a
    row per question. A bundled `model` is served here for the run; None asks the
    configured endpoints."""
    from django.conf import settings

    from retrieval import llm, scoring
    from retrieval.local_llm import LocalLlm

    server = None
    if model is not None:
        server = LocalLlm(settings.KB_LOCAL_LLM_PORT, model=model)
        settings.LLM_BASE_URLS = [server.url]
        settings.LLM_MODEL = model.name
        llm._pools.clear()
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            every = list(pool.map(lambda item: ask_one(principal, item, names), questions))
        load = " ".join(f"{n:.1f}" for n in os.getloadavg())
    finally:
        if server:
            server.stop()
    rows = [r for r in every if "busy" not in r and "error" not in r]
    answered = [r for r in rows if not r["refused"]]
    first_tokens = [r["ttft_ms"] for r in answered if r["ttft_ms"] is not None]
    return {
        "model": llm.pool_for(None).model,
        "concurrency": concurrency,
        "gold_retrieved": scoring.share(answered, "gold_retrieved"),
        "gold_cited": scoring.share(answered, "gold_cited"),
        "refused": scoring.share(rows, "refused"),
        "agreement": sum(1 for r in answered if r["label"] == r["gold_label"])
        / max(len(answered), 1),
        # Sentences citing nothing, per answer.
        "unsupported": sum(r["unsupported_sentences"] for r in answered) / max(len(answered), 1),
        **scoring.speed(answered),
        "ttft_p50_ms": percentile(first_tokens, 0.5),
        "ttft_p95_ms": percentile(first_tokens, 0.95),
        "errors": sum(1 for r in every if "error" in r),
        "busy": sum(1 for r in every if "busy" in r),
        "load": load,  # the 1, 5 and 15 minute load averages as the run ended
        "median_seconds": statistics.median(r["seconds"] for r in rows) if rows else 0.0,
        "rows": every,
    }


def calibrate(pubmed: Any, rows: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    """The refusal threshold against these answerable questions and the off-topic ones."""
    from retrieval.search import passages_search

    off_topic = [
        passages_search(
            query=q, collections=[pubmed], top_k=1, with_similarity=True
        ).best_similarity
        for q in OFF_TOPIC
    ]
    on_topic = sorted(r["best_similarity"] for r in rows if "best_similarity" in r)
    return {
        "answerable_best_similarity_p05": on_topic[len(on_topic) // 20],
        "answerable_best_similarity_min": on_topic[0],
        "off_topic_best_similarity_max": max(off_topic),
        "off_topic_best_similarity_median": statistics.median(off_topic),
        "off_topic_refused": sum(1 for s in off_topic if s < threshold) / len(off_topic),
    }


if __name__ == "__main__":
    main()
