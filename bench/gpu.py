"""On a GPU host: embedding throughput on CUDA, and answers through kb from vLLM.

    python bench/gpu.py --url https://kb.example.internal --token-file token.txt
    docker compose -f compose/docker-compose.yml exec worker-embed \\
        python bench/gpu.py --url http://web:8000 --token kb_...

1. Embedding: kb's embedding model (KB_EMBEDDING_MODEL_PATH, else the bundled MiniLM)
   through sentence-transformers on device cuda, on synthetic passages of about 200 word
   pieces (kb's chunk size), at several batch sizes: passages per second.
2. Answers: streamed questions to kb's /v1/chat/completions (so retrieval, the prompt
   and the vLLM replicas behind kb are all in the path) at 1, 8 and 32 at once: time to
   first token and tokens per second, per stream and in all. Ask questions your
   documents answer (--questions-file): a refused question never reaches the model and
   is counted apart.

No GPU or no kb reachable: it says which and exits with status 2. Not measured on the
project's machines (they have no GPU); compose/README.md keeps the results operators send.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import save

QUESTIONS = [
    "What does our policy say about paid holiday?",
    "Summarise the main points of the latest security guidelines.",
    "Who approves expenses above the usual limit?",
    "How do I request access to a new system?",
]
TEXT = (
    "the report describes quarterly revenue growth across regions while operating costs "
    "remained stable and the board approved further investment in research infrastructure "
    "customer retention improved after the support team introduced shorter response times"
)


class Unreachable(RuntimeError):
    """What the operator has to fix before anything can be measured."""


def passages(count: int, words: int = 150) -> list[str]:
    """Deterministic text of about 200 word pieces each (150 English words)."""
    rng = random.Random(17)
    vocabulary = TEXT.split()
    return [" ".join(rng.choices(vocabulary, k=words)) for _ in range(count)]


def gpu_check() -> str:
    try:
        import torch
    except ImportError as error:
        raise Unreachable(f"PyTorch is not installed here ({error})") from None
    if not torch.cuda.is_available():
        build = torch.version.cuda or "CPU only"
        raise Unreachable(
            f"no CUDA GPU is visible to PyTorch {torch.__version__} (built for CUDA: {build}). "
            "Run this on the GPU host, e.g. inside the worker-embed container."
        )
    return str(torch.cuda.get_device_name(0))


def embed_bench(count: int, batch_sizes: list[int]) -> list[dict[str, Any]]:
    import django
    import torch

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    django.setup()
    from sentence_transformers import SentenceTransformer

    from ingest.embedder import model_path

    model = SentenceTransformer(str(model_path()), device="cuda", local_files_only=True)
    texts = passages(count)
    model.encode(texts[:64], batch_size=64)  # CUDA context and kernels, not measured
    rows = []
    for batch in batch_sizes:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        model.encode(texts, batch_size=batch)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append(
            {
                "batch": batch,
                "passages": count,
                "seconds": round(seconds, 3),
                "passages_per_s": round(count / seconds, 1),
                "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
            }
        )
    return rows


def kb_check(url: str, token: str) -> str:
    import httpx

    try:
        httpx.get(f"{url}/healthz", timeout=5).raise_for_status()
        models = httpx.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    except httpx.HTTPError as error:
        raise Unreachable(f"kb does not answer at {url} ({error})") from None
    if models.status_code in (401, 403):
        raise Unreachable(f"kb at {url} refuses the token ({models.status_code})")
    models.raise_for_status()
    return url


def ask(url: str, token: str, model: str, question: str) -> dict[str, Any]:
    """One streamed question: when the first token came, how many the model made."""
    import httpx

    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = None
    tokens = 0
    refused = False
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=300,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"].get("message", "kb reported an error"))
            for choice in event.get("choices", []):
                if choice["delta"].get("content") and first is None:
                    first = time.perf_counter()
                refused = refused or bool(choice.get("kb_refused"))
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {
        "ttft_s": (first or end) - start,
        "seconds": end - start,
        "tokens": tokens,
        "refused": refused or tokens == 0,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def llm_bench(
    url: str, token: str, model: str, questions: list[str], levels: list[int], rounds: int
) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        asked = [questions[i % len(questions)] for i in range(level * rounds)]
        start = time.perf_counter()
        with ThreadPoolExecutor(level) as pool:
            results = list(pool.map(lambda q: ask(url, token, model, q), asked))
        wall = time.perf_counter() - start
        answered = [r for r in results if not r["refused"]]
        ttft = [r["ttft_s"] * 1000 for r in answered] or [0.0]
        per_stream = [
            r["tokens"] / (r["seconds"] - r["ttft_s"])
            for r in answered
            if r["seconds"] > r["ttft_s"]
        ] or [0.0]
        rows.append(
            {
                "concurrent": level,
                "questions": len(results),
                "refused": len(results) - len(answered),
                "ttft_p50_ms": round(statistics.median(ttft)),
                "ttft_p95_ms": round(percentile(ttft, 0.95)),
                "tokens_per_s_per_stream": round(statistics.median(per_stream), 1),
                "tokens_per_s_total": round(sum(r["tokens"] for r in answered) / wall, 1),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("KB_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("KB_TOKEN", ""))
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--model", default="kb", help="kb or kb:<collection slug>")
    parser.add_argument("--questions-file", type=Path, help="one question a line")
    parser.add_argument("--concurrency", type=ints, default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="questions per stream")
    parser.add_argument("--passages", type=int, default=20_000)
    parser.add_argument("--batch-sizes", type=ints, default=[32, 128, 512])
    parser.add_argument("--skip-embed", action="store_true")
    parser.add_argument("--skip-llm", action="store_true")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    token = args.token_file.read_text().strip() if args.token_file else args.token
    questions = (
        [q for q in args.questions_file.read_text().splitlines() if q.strip()]
        if args.questions_file
        else QUESTIONS
    )

    problems = []
    gpu = kb = ""
    if not args.skip_embed:
        try:
            gpu = gpu_check()
        except Unreachable as error:
            problems.append(f"embedding: {error}")
    if not args.skip_llm:
        try:
            if not token:
                raise Unreachable("no token: pass --token, --token-file or set KB_TOKEN")
            kb = kb_check(url, token)
        except Unreachable as error:
            problems.append(f"answers: {error}")
    if problems:
        print("bench/gpu.py cannot measure here:", *problems, sep="\n  ", file=sys.stderr)
        print("(use --skip-embed or --skip-llm to measure only the other part)", file=sys.stderr)
        sys.exit(2)

    results: dict[str, Any] = {"gpu": gpu, "kb": kb, "model": args.model}
    summary = ["gpu"]
    if not args.skip_embed:
        embed = embed_bench(args.passages, args.batch_sizes)
        results["embedding"] = embed
        print(f"Embedding on {gpu}\n\n{table(embed)}\n")
        summary.append(f"embed_passages_per_s={max(r['passages_per_s'] for r in embed)}")
    if not args.skip_llm:
        answers = llm_bench(url, token, args.model, questions, args.concurrency, args.rounds)
        results["answers"] = answers
        print(f"Answers through {url}/v1/chat/completions\n\n{table(answers)}\n")
        for row in answers:
            level = row["concurrent"]
            summary.append(f"ttft_p50_ms@{level}={row['ttft_p50_ms']}")
            summary.append(f"tokens_per_s@{level}={row['tokens_per_s_total']}")
    print(f"saved {save('gpu', results)}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
