"""Ingestion benchmark: kb's pipeline against llama-index's default one, in one run.

    python bench/ingest.py [--corpus ../shared/eval/corpus] [--out bench/results/ingest.json]

Each contender runs in its own process (fair start-up and peak memory):
- kb: the real services stage by stage (store, parse and chunk in the parse child
  process, embed, index) on SQLite and the in-process Qdrant engine; its peak memory is
  the process's plus its parse child's;
- llama-index default: SimpleDirectoryReader + SentenceSplitter(1024) + VectorStoreIndex
  with the same MiniLM model and a Qdrant store (qdrant-client in memory);
- llama-index equal work: the same, split to fit MiniLM's window, so it embeds all text;
- encode: raw sentence-transformers `model.encode` (PyTorch) over kb's passages;
- encode-backend: kb's embedding backend (ONNX Runtime on a CPU) over all of kb's
  passages in one call: the limit for the embedding stage.
The ONNX export of the model is made once, before any timing (a first start's cost).
Prints a table, saves JSON; the last line is the summary the README quotes.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "eval" / "corpus"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parser_peak_mb() -> float:
    """The largest peak of this process's parse children (ingest.isolated), still alive."""
    import psutil

    peaks = [0.0]
    for child in psutil.Process().children():
        status = Path(f"/proc/{child.pid}/status").read_text()
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if "VmHWM" in line]
    return max(peaks)


def wordpieces(texts: list[str]) -> tuple[int, int]:
    """(embedded, dropped) word pieces of these texts in MiniLM's 256-piece window."""
    import django

    django.setup()
    from ingest import embedder

    limit = embedder.max_tokens()
    embedded = dropped = 0
    for text in texts:
        pieces = embedder.count_tokens(text) + 2
        embedded += min(pieces, limit)
        dropped += max(0, pieces - limit)
    return embedded, dropped


def run_kb(corpus: Path, passages_file: Path, *, staged: bool) -> dict[str, Any]:
    """kb's real services. `staged`: each stage over all files in turn, for per-stage
    figures; otherwise the real worker threads, stages overlapping, as `ingest_folder`."""
    data = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    os.environ.update(KB_DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="server.settings")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    from ingest import embedder, pipeline, services
    from ingest.models import Chunk, DocumentVersion, Stage
    from ingest.vectors.edge import EdgeStore
    from kb.audit import SYSTEM
    from kb.services import collection_create
    from server.management.commands.ingest_folder import files_opened
    from server.runtime import background_work

    call_command("migrate", verbosity=0)
    collection = collection_create(slug="bench", name="bench", actor=SYSTEM)[0]
    clock: dict[str, float] = {"load": 0.0, "parse+chunk": 0.0, "embed": 0.0, "index": 0.0}

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                clock[name] += time.perf_counter() - start

        return wrapper

    pipeline.extract_batch_isolated = timed("parse+chunk", pipeline.extract_batch_isolated)  # type: ignore[attr-defined]
    embedder.embed = timed("embed", embedder.embed)
    EdgeStore.upsert = timed("index", EdgeStore.upsert)  # type: ignore[method-assign]
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    started = time.perf_counter()
    # Cold start counts: loading the model (the parse child's, in its first parse).
    embedder.model()
    clock["load"] = time.perf_counter() - started

    def upload_all() -> None:
        # As ingest_folder stores a folder: UPLOAD_BATCH files to a transaction.
        opened = files_opened(corpus, files)
        for _ in services.documents_store(collection=collection, actor=SYSTEM, files=opened):
            pass

    if staged:
        pipeline.enqueue_parse = lambda version_id: None  # stages are driven below
        pipeline.enqueue_parse_many = lambda version_ids: None
        pipeline.enqueue_embed = lambda version_id: None
        pipeline.enqueue_embed_many = lambda version_ids: None
        upload_all()
        for version_id in DocumentVersion.objects.values_list("pk", flat=True):
            pipeline.version_parse(version_id=version_id)
        for version_id in DocumentVersion.objects.filter(stage=Stage.EMBEDDING).values_list(
            "pk", flat=True
        ):
            pipeline.version_embed(version_id=version_id)
    else:
        with background_work():
            upload_all()
            while DocumentVersion.objects.exclude(stage__in=[Stage.READY, Stage.FAILED]).exists():
                time.sleep(0.2)
    clock["total"] = time.perf_counter() - started
    chunks = list(Chunk.objects.all())
    texts = [c.embedding_text for c in chunks]
    if staged:
        passages_file.write_text(json.dumps(texts))
    embedded, dropped = wordpieces(texts)
    versions = DocumentVersion.objects.select_related("document")
    return {
        "files": len(files),
        "ready": versions.filter(stage=Stage.READY).count(),
        "failed": {v.document.path: v.error for v in versions.filter(stage=Stage.FAILED)},
        "pages": sum(v.pages or 0 for v in versions),
        "chunks": len(chunks),
        "seconds": clock,
        "wordpieces_embedded": embedded,
        "wordpieces_dropped": dropped,
        "peak_mb": peak_mb() + parser_peak_mb(),
    }


def run_llamaindex(corpus: Path, chunk_size: int | None) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    os.environ["KB_DATA_DIR"] = tempfile.mkdtemp(prefix="kb-bench-li-")
    import django

    django.setup()
    from llama_index.core import Settings, SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    from ingest import embedder

    started = time.perf_counter()
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(embedder.model_path()), device="cpu")
    Settings.llm = None
    documents = SimpleDirectoryReader(str(corpus), recursive=True).load_data()
    read = time.perf_counter()
    if chunk_size is None:
        splitter = SentenceSplitter()  # llama-index's default: 1024 tokens
    else:
        # Measured in MiniLM's word pieces, metadata included, so nothing is cut off.
        splitter = SentenceSplitter(
            chunk_size=chunk_size,
            chunk_overlap=24,
            tokenizer=lambda t: embedder.tokenizer().encode(t, add_special_tokens=False).ids,
        )
    nodes = splitter.get_nodes_from_documents(documents)
    split = time.perf_counter()
    store = QdrantVectorStore(client=QdrantClient(location=":memory:"), collection_name="bench")
    VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))
    finished = time.perf_counter()
    embedded, dropped = wordpieces([n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes])
    return {
        "files": len({d.metadata.get("file_path") for d in documents}),
        "pages": sum(1 for d in documents if str(d.metadata.get("file_path", "")).endswith(".pdf")),
        "chunks": len(nodes),
        "seconds": {
            "parse": read - started,
            "chunk": split - read,
            "embed+index": finished - split,
            "total": finished - started,
        },
        "wordpieces_embedded": embedded,
        "wordpieces_dropped": dropped,
        "peak_mb": peak_mb(),
    }


def run_encode(passages_file: Path, *, backend: bool) -> dict[str, Any]:
    """All of kb's passages in one call: sentence-transformers', or kb's backend's."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    os.environ["KB_DATA_DIR"] = tempfile.mkdtemp(prefix="kb-bench-enc-")
    import django

    django.setup()
    from django.conf import settings

    from ingest import embedder

    texts = json.loads(passages_file.read_text())
    if backend:
        encode = embedder.embed
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(embedder.model_path()), device="cpu")

        def encode(texts: list[str]) -> Any:
            size = settings.KB_EMBEDDING_BATCH_SIZE
            return model.encode(texts, batch_size=size, normalize_embeddings=True)

    encode(texts[:32])  # warm up
    started = time.perf_counter()
    encode(texts)
    seconds = time.perf_counter() - started
    name = embedder.backend() if backend else "torch"
    return {
        "chunks": len(texts),
        "backend": name,
        "seconds": {"embed": seconds},
        "peak_mb": peak_mb(),
    }


def run_export() -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    os.environ["KB_DATA_DIR"] = tempfile.mkdtemp(prefix="kb-bench-export-")
    import django

    django.setup()
    from ingest import embedder

    embedder.model()
    return {"backend": embedder.backend()}


def child(name: str, corpus: Path, passages: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--corpus", str(corpus)]
    command += ["--passages", str(passages)]
    print(f"running {name} ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    run: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--passages", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.update(DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if args.child:
        runs = {
            "kb": lambda: run_kb(args.corpus, args.passages, staged=False),
            "kb-staged": lambda: run_kb(args.corpus, args.passages, staged=True),
            "llamaindex-default": lambda: run_llamaindex(args.corpus, None),
            "llamaindex-equal": lambda: run_llamaindex(args.corpus, 254),
            "encode": lambda: run_encode(args.passages, backend=False),
            "encode-backend": lambda: run_encode(args.passages, backend=True),
        }
        runs["export"] = run_export
        print(json.dumps(runs[args.child]()))
        return
    if not args.corpus.is_dir():
        sys.exit(f"no corpus at {args.corpus}")
    passages = Path(tempfile.mkdtemp(prefix="kb-bench-")) / "passages.json"
    os.environ["KB_MODEL_CACHE_DIR"] = str(passages.parent / "models")
    exported = time.perf_counter()
    child("export", args.corpus, passages)
    export_seconds = time.perf_counter() - exported
    names = (
        "kb",
        "kb-staged",
        "encode",
        "encode-backend",
        "llamaindex-default",
        "llamaindex-equal",
    )
    results: dict[str, Any] = {name: child(name, args.corpus, passages) for name in names}
    report(results)
    print(f"once, on a first start: the model's ONNX export took {export_seconds:.1f} s")
    results["export_seconds"] = export_seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def report(results: dict[str, dict[str, Any]]) -> None:
    print(
        f"{'run':<20} {'files':>5} {'chunks':>6} {'total s':>8} {'chunks/s':>8} "
        f"{'wp embedded':>11} {'wp dropped':>10} {'peak MB':>8}  stages (s)"
    )
    for name, run in results.items():
        seconds = run["seconds"]
        total = seconds.get("total", seconds.get("embed"))
        stages = " ".join(f"{k}={v:.1f}" for k, v in seconds.items() if k != "total")
        print(
            f"{name:<20} {run.get('files', '-')!s:>5} {run['chunks']:>6} {total:>8.1f} "
            f"{run['chunks'] / total:>8.1f} {run.get('wordpieces_embedded', '-')!s:>11} "
            f"{run.get('wordpieces_dropped', '-')!s:>10} {run['peak_mb']:>8.0f}  {stages}"
        )
    kb, staged = results["kb"], results["kb-staged"]
    equal, encode = results["llamaindex-equal"], results["encode-backend"]
    print(
        f"kb: {kb['ready']} ready, {staged['pages']} PDF pages at "
        f"{staged['pages'] / staged['seconds']['parse+chunk']:.1f} pages/s in the parse stage; "
        f"failed: {json.dumps(kb['failed'])}"
    )
    speedup = equal["seconds"]["total"] / kb["seconds"]["total"]
    staged_rate = staged["chunks"] / staged["seconds"]["embed"]
    efficiency = staged_rate / (encode["chunks"] / encode["seconds"]["embed"])
    print(
        f"ingest speedup_vs_llamaindex={speedup:.2f} embed_efficiency={efficiency:.2f} "
        f"dropped_wordpieces={kb['wordpieces_dropped']}"
    )


if __name__ == "__main__":
    main()
