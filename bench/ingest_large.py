"""Large files: peak memory and time until each is parsed into passages or has failed.

    python bench/ingest_large.py [--out bench/results/ingest_large.json] [--scale 1.0]

Three generated files (issue 15): 150 MB of ordinary text in paragraphs, 50 MB of the
same text in one line, and a 7.9 MB CSV whose one line holds a million columns.
`--scale` shrinks them for a quick look.

Each file runs in its own process, for a fair peak:
- kb: the real upload and parse stage (`pipeline.version_parse`: detection, then parse
  and chunk in the child process under its limits) on SQLite, until the passages are
  written or the version has failed; peak resident memory of the process and of the
  parse child. Embedding is not part of it (bench/ingest.py measures that stage).
- llama-index: the same file read by SimpleDirectoryReader and split by
  SentenceSplitter (its default pipeline's first two steps), in a process capped at
  3 GB of address space and 300 s, as the baseline.

Targets: under 1,500 MB peak (process and child together) and 300 s each.
Prints a table, saves JSON; the last line is the summary.
"""

import argparse
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, kb_setup  # noqa: E402

TARGET_MB = 1500
TARGET_SECONDS = 300
BASELINE_CAP_BYTES = 3 * 2**30
VOCABULARY = (
    "the a of to and in is for on that with as by at from this be are or an it not "
    "report quarter revenue cost policy system access data record service customer "
    "market product employee review control risk audit network security document "
    "process manager team year value growth period total"
)


def _sentence(rng: random.Random) -> str:
    words = rng.choices(VOCABULARY.split(), k=rng.randint(8, 24))
    return " ".join(words).capitalize() + "."


def make_files(folder: Path, scale: float) -> dict[str, Path]:
    rng = random.Random(15)
    paragraphs = [" ".join(_sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(2000)]
    text = folder / "ordinary.txt"
    line = folder / "one-line.txt"
    with text.open("w") as paragraphed, line.open("w") as single:
        written = 0
        while written < 150 * 2**20 * scale:
            paragraph = paragraphs[rng.randrange(len(paragraphs))]
            paragraphed.write(paragraph + "\n\n")
            if written < 50 * 2**20 * scale:
                single.write(paragraph + " ")
            written += len(paragraph) + 2
    columns = folder / "million-columns.csv"
    columns.write_text(",".join(f"c{n:06d}" for n in range(int(1_000_000 * scale))) + "\n")
    return {"150 MB text": text, "50 MB one line": line, "million-column CSV": columns}


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def run_kb(path: Path, queue: Any) -> None:
    kb_setup()
    from ingest import isolated, pipeline, services
    from ingest.models import DocumentVersion
    from kb.audit import SYSTEM
    from kb.services import collection_create

    pipeline.enqueue_parse = lambda version_id: None  # driven below, timed
    pipeline.enqueue_embed = lambda version_id: None  # not measured here
    pipeline.enqueue_embed_many = lambda version_ids: None
    collection = collection_create(slug="bench", name="bench", actor=SYSTEM)[0]
    started = time.perf_counter()
    with path.open("rb") as stream:
        services.document_upload(collection=collection, actor=SYSTEM, path=path.name, stream=stream)
    version = DocumentVersion.objects.get()
    pipeline.version_parse(version_id=version.pk)
    seconds = time.perf_counter() - started
    version.refresh_from_db()
    child = getattr(isolated._local, "child", None)
    if child is not None:
        child.stop()  # waited for, so its peak is counted below
    outcome = f"failed: {version.error}" if version.error else f"{version.chunk_count} passages"
    queue.put(
        {
            "seconds": seconds,
            "outcome": outcome,
            "process_mb": _peak_mb(resource.RUSAGE_SELF),
            "child_mb": _peak_mb(resource.RUSAGE_CHILDREN),
        }
    )


def run_llama_index(path: Path, queue: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (BASELINE_CAP_BYTES, BASELINE_CAP_BYTES))
    started = time.perf_counter()
    try:
        from llama_index.core import SimpleDirectoryReader
        from llama_index.core.node_parser import SentenceSplitter

        documents = SimpleDirectoryReader(input_files=[str(path)]).load_data()
        nodes = SentenceSplitter().get_nodes_from_documents(documents)
        outcome = f"{len(nodes)} passages"
    except MemoryError:
        outcome = "out of memory (3 GB cap)"
    except Exception as error:  # what the baseline does with such a file, recorded
        outcome = f"{type(error).__name__}: {str(error)[:60]}"
    queue.put(
        {
            "seconds": time.perf_counter() - started,
            "outcome": outcome,
            "process_mb": _peak_mb(resource.RUSAGE_SELF),
            "child_mb": 0.0,
        }
    )


def measure(target: Any, path: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(path, queue))
    process.start()
    process.join(TARGET_SECONDS + 60)
    if process.is_alive():
        process.kill()
        process.join()
        return {"seconds": None, "outcome": f"stopped after {TARGET_SECONDS + 60} s"}
    if queue.empty():
        return {"seconds": None, "outcome": f"process died (exit {process.exitcode})"}
    result: dict[str, Any] = queue.get()
    result["peak_mb"] = result["process_mb"] + result["child_mb"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest_large.json")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kb-large-") as folder:
        for name, path in make_files(Path(folder), args.scale).items():
            size = path.stat().st_size / 2**20
            for contender, target in (("kb", run_kb), ("llama-index", run_llama_index)):
                result = measure(target, path)
                rows.append({"file": name, "mb": round(size, 1), "run": contender, **result})
                print(f"  {name} / {contender}: {result}", flush=True)
    print("\n| file | MB | run | peak MB (process + child) | seconds | outcome |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        peak = f"{row['peak_mb']:,.0f}" if row.get("peak_mb") else "-"
        seconds = f"{row['seconds']:.1f}" if row["seconds"] is not None else "-"
        print(
            f"| {row['file']} | {row['mb']} | {row['run']} | {peak} | {seconds} | "
            f"{row['outcome'][:90]} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scale": args.scale, "rows": rows}, indent=2))
    kb = [r for r in rows if r["run"] == "kb"]
    met = sum(
        1
        for r in kb
        if r["seconds"] is not None and r["seconds"] <= TARGET_SECONDS and r["peak_mb"] <= TARGET_MB
    )
    worst_mb = max((r.get("peak_mb") or 0) for r in kb)
    worst_s = max((r["seconds"] or float("inf")) for r in kb)
    print(
        f"\nkb: {met} of {len(kb)} files within {TARGET_MB:,} MB and {TARGET_SECONDS} s "
        f"(worst {worst_mb:,.0f} MB, {worst_s:.0f} s); saved {args.out}"
    )


if __name__ == "__main__":
    main()
