"""A worker killed with SIGKILL mid-document loses nothing and duplicates nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from ingest.models import Chunk, Document, DocumentVersion, Stage
from ingest.vectors import vector_store
from tests import files

ROOT = Path(__file__).resolve().parent.parent


def ingest_folder(folder: Path, data_dir: Path) -> subprocess.Popen[str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": url,
        "KB_DATA_DIR": str(data_dir),
        "KB_MODEL_CACHE_DIR": str(settings.KB_MODEL_CACHE_DIR),
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "ingest_folder", "hr", str(folder), "--wait"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


@pytest.mark.postgres
def test_sigkill_mid_document_then_rerun_completes_cleanly(audit_head, hr, data_dir, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for kind in ("md", "txt", "html", "docx", "csv", "pdf"):
        files.make(kind, folder)
    first = ingest_folder(folder, data_dir)
    deadline = time.monotonic() + 120
    # Kill it as soon as a document has passages but is not yet live: mid-document.
    while not DocumentVersion.objects.filter(stage__in=[Stage.EMBEDDING, Stage.INDEXING]).exists():
        assert first.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline, "no document reached embedding"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    unfinished = DocumentVersion.objects.exclude(stage__in=[Stage.READY, Stage.FAILED]).count()
    assert unfinished > 0

    second = ingest_folder(folder, data_dir)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    assert out.strip().splitlines()[-1].startswith("ingest files=6 ready=6 failed=0 ")

    assert Document.objects.count() == 6
    store = vector_store()
    for document in Document.objects.all():
        (version,) = DocumentVersion.objects.filter(document=document)
        assert version.stage == Stage.READY and document.live_version_id == version.pk
        chunks = Chunk.objects.filter(version=version).count()
        assert chunks == version.chunk_count > 0
        # Every passage has exactly one point; nothing left over from the killed run.
        assert store.count(document_id=document.pk) == chunks
        assert store.count(document_id=document.pk, live_only=True) == chunks
    assert store.count() == Chunk.objects.count()
