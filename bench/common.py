"""What the benchmarks share: a throw-away kb, BEIR data, and documents loaded through
kb's real services (stage by stage, in this process)."""

import io
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval"
RESULTS = ROOT / "bench" / "results"


def kb_setup(data_dir: Path | None = None) -> Path:
    """Django on a fresh SQLite database and vector store in a temporary folder."""
    data = data_dir or Path(tempfile.mkdtemp(prefix="kb-bench-"))
    sys.path.insert(0, str(ROOT))
    os.environ.update(
        KB_DATA_DIR=str(data),
        DJANGO_SETTINGS_MODULE="server.settings",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    for name in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        query_id, corpus_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[corpus_id] = int(score)
    return qrels


def load_texts(slug: str, documents: dict[str, str]) -> dict[int, str]:
    """Ingest {name: markdown} through kb's services; returns {document id: name}."""
    files = {f"{name}.md": io.BytesIO(text.encode()) for name, text in documents.items()}
    return {pk: path.removesuffix(".md") for pk, path in load_streams(slug, files).items()}


def load_folder(slug: str, folder: Path) -> dict[int, str]:
    """Ingest every file under `folder` through kb's services; returns {document id:
    path inside the folder}."""
    files = {
        path.relative_to(folder).as_posix(): io.BytesIO(path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    return load_streams(slug, files)


def load_streams(slug: str, files: dict[str, io.BytesIO]) -> dict[int, str]:
    """Upload {path: bytes} into a new collection, then drive each stage over all of
    them in this process; returns {document id: path}."""
    from ingest import pipeline, services
    from ingest.models import DocumentVersion, Stage
    from kb.audit import SYSTEM
    from kb.services import collection_create

    collection = collection_create(slug=slug, name=slug, actor=SYSTEM)[0]
    pipeline.enqueue_parse = lambda version_id: None  # stages are driven below
    pipeline.enqueue_embed = lambda version_id: None
    pipeline.enqueue_embed_many = lambda version_ids: None
    paths = {}
    for path, stream in files.items():
        (result,) = services.document_upload(
            collection=collection, actor=SYSTEM, path=path, stream=stream
        )
        assert result.document is not None, result.error
        paths[result.document.pk] = path
    versions = DocumentVersion.objects.filter(document__collection=collection)
    for version_id in versions.filter(stage=Stage.QUEUED).values_list("pk", flat=True):
        pipeline.version_parse(version_id=version_id)
    for version_id in versions.filter(stage=Stage.EMBEDDING).values_list("pk", flat=True):
        pipeline.version_embed(version_id=version_id)
    failed = versions.filter(stage=Stage.FAILED).count()
    if failed:
        print(f"warning: {failed} documents failed to ingest", file=sys.stderr)
    return paths


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
