"""Many small files: kb's real worker against llama-index at equal work, and a restart
after a kill.

    python bench/ingest_many.py [--files 10000] [--out bench/results/ingest_many.json]

Generated Markdown files of one heading and one paragraph (issue 15: a zip of 10,000 of
them went at 6.5 files/s). Three runs, each in its own process:
- kb: `ingest_folder`'s path (upload each file, the in-process worker parses, chunks,
  embeds and indexes them) on SQLite and the in-process Qdrant engine, until all are
  ready (bench/ingest.py's kb run, on this folder);
- llama-index equal work: SimpleDirectoryReader + SentenceSplitter fitted to MiniLM's
  window + VectorStoreIndex with the same model (bench/ingest.py's baseline);
- kill and restart: `ingest_folder` on the folder, killed with SIGKILL once a quarter
  of the files are ready; then a new owner finishes the rest. Counted: the messages the
  kill left, and the parse and embed tasks the new owner ran for versions the database
  already said were past that stage (stale messages replayed).

Target: kb at least 1.5 times the baseline's files per second; no stale message replayed.
Prints a table, saves JSON; the last line is the summary.
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, kb_setup  # noqa: E402
from bench.ingest import child  # noqa: E402
from bench.ingest_large import VOCABULARY  # noqa: E402

TARGET_SPEEDUP = 1.5


def make_files(folder: Path, count: int) -> None:
    rng = random.Random(15)
    words = VOCABULARY.split()
    for n in range(count):
        sentences = [
            " ".join(rng.choices(words, k=rng.randint(8, 20))).capitalize() + "."
            for _ in range(rng.randint(3, 6))
        ]
        text = f"# Note {n}\n\n{' '.join(sentences)}\n"
        (folder / f"{n // 1000:02d}" / f"note-{n:05d}.md").write_text(text)


def kill_phase(corpus: Path, data: Path, total: int) -> dict[str, Any]:
    """`ingest_folder` killed once a quarter of the files are ready."""
    env = {**os.environ, "KB_DATA_DIR": str(data)}
    for name in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL"):
        env.pop(name, None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [sys.executable, "manage.py", "collection_create", "bench"], cwd=ROOT, env=env, check=True
    )
    run = subprocess.Popen(
        [sys.executable, "manage.py", "ingest_folder", "bench", str(corpus), "--wait"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    database = sqlite3.connect(data / "kb.sqlite3", timeout=30)
    started = time.perf_counter()
    while (ready := _count(database, "stage = 'ready'")) < total // 4:
        if run.poll() is not None:
            sys.exit("ingest_folder ended before it could be killed")
        time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    time.sleep(2)  # its parse child sees it gone and exits
    seconds = time.perf_counter() - started
    left = sum(1 for p in (data / "broker").glob("*/*.msg"))
    return {"seconds": seconds, "ready": ready, "messages_left": left}


def _count(database: sqlite3.Connection, where: str) -> int:
    try:
        (count,) = database.execute(
            f"SELECT count(*) FROM ingest_documentversion WHERE {where}"  # noqa: S608 (ours)
        ).fetchone()
    except sqlite3.OperationalError:
        return 0  # not migrated yet, or busy
    return int(count)


def restart_phase(data: Path) -> dict[str, Any]:
    """A new owner on the killed one's data, until every version is ready or failed."""
    kb_setup(data)
    from ingest import pipeline
    from ingest.models import ACTIVE_STAGES, DocumentVersion, Stage
    from server.runtime import background_work

    before = dict(DocumentVersion.objects.values_list("pk", "stage"))
    parse_stages = (Stage.QUEUED, Stage.PARSING, Stage.CHUNKING)
    stale = {"parse": 0, "embed": 0}
    real_parse, real_embed = pipeline.version_parse, pipeline.version_embed
    real_parse_many, real_embed_many = pipeline.versions_parse, pipeline.versions_embed

    def parse(*, version_id: int) -> None:
        stale["parse"] += before.get(version_id) not in parse_stages
        real_parse(version_id=version_id)

    def parse_many(*, version_ids: list[int]) -> None:
        stale["parse"] += sum(before.get(pk) not in parse_stages for pk in version_ids)
        real_parse_many(version_ids=version_ids)

    def embed(*, version_id: int, companions: bool = True) -> None:
        stale["embed"] += before.get(version_id) in (Stage.READY, Stage.FAILED)
        real_embed(version_id=version_id, companions=companions)

    def embed_many(*, version_ids: list[int]) -> None:
        stale["embed"] += sum(before.get(pk) in (Stage.READY, Stage.FAILED) for pk in version_ids)
        real_embed_many(version_ids=version_ids)

    pipeline.version_parse, pipeline.version_embed = parse, embed
    pipeline.versions_parse, pipeline.versions_embed = parse_many, embed_many
    pending = sum(1 for stage in before.values() if stage in ACTIVE_STAGES)
    started = time.perf_counter()
    with background_work():
        while DocumentVersion.objects.filter(stage__in=ACTIVE_STAGES).exists():
            time.sleep(0.2)
    seconds = time.perf_counter() - started
    ready = DocumentVersion.objects.filter(stage=Stage.READY).count()
    return {"pending": pending, "seconds": seconds, "ready": ready, "stale_replayed": stale}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest_many.json")
    parser.add_argument("--restart", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restart:
        print(json.dumps(restart_phase(args.restart)))
        return
    os.environ.update(DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    work = Path(tempfile.mkdtemp(prefix="kb-many-"))
    corpus = work / "notes"
    for part in range((args.files + 999) // 1000):
        (corpus / f"{part:02d}").mkdir(parents=True)
    make_files(corpus, args.files)
    passages = work / "passages.json"
    os.environ["KB_MODEL_CACHE_DIR"] = str(work / "models")
    child("export", corpus, passages)  # the model's ONNX export, once, before timing
    runs = {name: child(name, corpus, passages) for name in ("kb", "llamaindex-equal")}
    print("running kill and restart ...", file=sys.stderr, flush=True)
    killed = kill_phase(corpus, work / "killed", args.files)
    restart = subprocess.run(
        [sys.executable, __file__, "--restart", str(work / "killed")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    restarted = json.loads(restart.stdout.strip().splitlines()[-1])

    print("\n| run | files | ready | passages | seconds | files/s | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        total = run["seconds"]["total"]
        print(
            f"| {name} | {run['files']} | {run.get('ready', '-')} | {run['chunks']} | "
            f"{total:.1f} | {run['files'] / total:.1f} | {run['peak_mb']:.0f} |"
        )
    stale = restarted["stale_replayed"]
    print(
        f"\nkilled after {killed['seconds']:.0f} s with {killed['ready']} ready and "
        f"{killed['messages_left']} messages left in the broker; the new owner finished "
        f"{restarted['pending']} pending in {restarted['seconds']:.1f} s "
        f"({restarted['ready']} ready in all), replaying {stale['parse']} stale parse and "
        f"{stale['embed']} stale embed messages"
    )
    kb, baseline = runs["kb"], runs["llamaindex-equal"]
    speedup = baseline["seconds"]["total"] / kb["seconds"]["total"]
    result = {"files": args.files, "runs": runs, "killed": killed, "restarted": restarted}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nkb {args.files / kb['seconds']['total']:.1f} files/s, "
        f"{speedup:.2f}x llama-index (target {TARGET_SPEEDUP}x); stale messages replayed "
        f"after a kill: {stale['parse'] + stale['embed']}; saved {args.out}"
    )


if __name__ == "__main__":
    main()
