"""The ingestion pipeline end to end: real parser, real model, real in-process Qdrant."""

import io
import socket
import subprocess
import sys
import zipfile

import pytest

from ingest import storage
from ingest.models import Chunk, Document, DocumentVersion, Stage
from ingest.services import document_delete, document_upload, documents_store
from ingest.sparse import encode_query
from ingest.vectors import vector_store
from ingest.vectors.base import Scope
from kb.audit import SYSTEM
from kb.models import AuditEvent
from tests import files
from tests.conftest import logged_in


def upload(collection, name: str, data: bytes):
    return document_upload(collection=collection, actor=SYSTEM, path=name, stream=io.BytesIO(data))


def upload_file(collection, path):
    return upload(collection, path.name, path.read_bytes())


def version_of(result) -> DocumentVersion:
    return DocumentVersion.objects.get(pk=result.version.pk)


def found(collection, words: str) -> list[int]:
    hits = vector_store().search(
        dense=None,
        sparse=encode_query(words),
        scope=Scope([collection.pk]),
        limit=10,
        mode="sparse",
    )
    return [h.payload["document_id"] for h in hits]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection off this machine fails the test."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (
            host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")
        ):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.mark.parametrize("kind", sorted(files.FACTS))
def test_every_format_is_indexed_offline(pipeline, hr, tmp_path, no_network, kind):
    (result,) = upload_file(hr, files.make(kind, tmp_path))
    version = version_of(result)
    assert version.stage == Stage.READY, version.error
    assert version.progress == 1.0
    chunks = list(Chunk.objects.filter(version=version))
    assert chunks and any(files.FACTS[kind] in c.text for c in chunks)
    assert all(c.token_count + len(c.context) // 100 <= 254 for c in chunks)
    assert result.document.pk in found(hr, files.FACTS[kind])
    assert vector_store().count(document_id=result.document.pk) == len(chunks)


def test_passages_fit_the_model_window_and_keep_pages(pipeline, hr, tmp_path):
    from ingest import embedder

    long_text = " ".join(
        f"Sentence {n} explains rule {n} of the travel policy." for n in range(400)
    )
    path = files.write_pdf(tmp_path / "long.pdf", [long_text[:3000], long_text[3000:6000]])
    (result,) = upload_file(hr, path)
    version = version_of(result)
    assert version.stage == Stage.READY and version.pages == 2
    chunks = list(Chunk.objects.filter(version=version))
    for chunk in chunks:
        assert embedder.count_tokens(f"{chunk.context}\n{chunk.text}") + 2 <= embedder.max_tokens()
        assert chunk.context.startswith("long")
    assert {c.page for c in chunks} == {1, 2}


def test_table_stays_with_its_header_row(pipeline, hr, tmp_path):
    (result,) = upload_file(hr, files.make("csv", tmp_path))
    (chunk,) = Chunk.objects.filter(version=version_of(result))
    assert chunk.element_type == "Table"
    assert chunk.text.splitlines()[0] == "fruit | colour | price"


def test_same_content_twice_is_one_document(pipeline, hr, tmp_path):
    data = files.make("txt", tmp_path).read_bytes()
    (first,) = upload(hr, "notes.txt", data)
    chunks = Chunk.objects.count()
    (again,) = upload(hr, "copy-of-notes.txt", data)
    assert again.duplicate and again.document.pk == first.document.pk
    assert Chunk.objects.count() == chunks
    assert Document.objects.count() == 1


def test_changed_file_becomes_a_new_version_that_replaces_the_old(pipeline, hr, monkeypatch):
    from ingest import pipeline

    (first,) = upload(hr, "policy.txt", b"The old rule: lunch is at noon.\n")
    assert found(hr, "lunch noon") == [first.document.pk]
    with monkeypatch.context() as held:
        held.setattr(pipeline, "enqueue_parse", lambda version_id: None)  # a lost message
        (second,) = upload(hr, "policy.txt", b"The new rule: dinner is at seven.\n")
    assert second.document.pk == first.document.pk and second.version.number == 2
    # Until the new version is whole, the old one answers.
    assert found(hr, "lunch noon") == [first.document.pk]
    assert found(hr, "dinner seven") == []
    pipeline.ingest_reconcile()
    assert version_of(second).stage == Stage.READY
    assert found(hr, "dinner seven") == [first.document.pk]
    assert found(hr, "lunch noon") == []
    document = Document.objects.get(pk=first.document.pk)
    assert document.live_version_id == second.version.pk
    assert not Chunk.objects.filter(version_id=first.version.pk).exists()
    assert (
        vector_store().count(document_id=document.pk)
        == Chunk.objects.filter(document=document).count()
    )


def waiting_to_embed(collection, monkeypatch, count: int) -> list[DocumentVersion]:
    """Small documents parsed into passages whose embedding messages were lost."""
    from ingest import pipeline

    with monkeypatch.context() as held:
        held.setattr(pipeline, "enqueue_embed", lambda version_id: None)
        results = [
            upload(
                collection, f"memo-{n}.txt", f"Memo {n}: the locker code is {n}{n}{n}.\n".encode()
            )
            for n in range(count)
        ]
    versions = [version_of(result) for (result,) in results]
    assert all(v.stage == Stage.EMBEDDING for v in versions)
    return versions


def test_small_documents_waiting_are_embedded_in_one_call(pipeline, hr, monkeypatch):
    from ingest import embedder, pipeline

    versions = waiting_to_embed(hr, monkeypatch, 3)
    calls: list[int] = []
    real = embedder.embed

    def counted(texts):
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(embedder, "embed", counted)
    pipeline.version_embed(version_id=versions[0].pk)
    assert calls == [sum(v.chunk_count for v in versions)]
    for version in versions:
        assert version_of_doc(version.document_id).stage == Stage.READY
    assert set(found(hr, "locker code")) == {v.document_id for v in versions}
    # Their own messages, arriving afterwards, change nothing.
    for version in versions[1:]:
        pipeline.version_embed(version_id=version.pk)
    assert len(calls) == 1
    assert vector_store().count(live_only=True) == Chunk.objects.count()


def test_a_claimed_version_is_left_to_its_holder_and_a_retry_goes_alone(pipeline, hr, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from ingest import pipeline

    first, held, third = waiting_to_embed(hr, monkeypatch, 3)
    DocumentVersion.objects.filter(pk=held.pk).update(
        claimed_until=timezone.now() + timedelta(minutes=5)  # another worker is on it
    )
    pipeline.version_embed(version_id=held.pk)
    assert version_of_doc(held.document_id).stage == Stage.EMBEDDING
    pipeline.version_embed(version_id=first.pk, companions=False)
    assert version_of_doc(first.document_id).stage == Stage.READY
    assert version_of_doc(third.document_id).stage == Stage.EMBEDDING
    pipeline.version_embed(version_id=third.pk)
    assert version_of_doc(third.document_id).stage == Stage.READY
    assert version_of_doc(held.document_id).stage == Stage.EMBEDDING
    # The holder went quiet: the reconciler voids its claim and the work gets done.
    pipeline.ingest_reconcile()
    assert version_of_doc(held.document_id).stage == Stage.READY
    assert vector_store().count(live_only=True) == Chunk.objects.count()


def test_a_failed_embedding_frees_and_requeues_its_companions(pipeline, hr, monkeypatch):
    from ingest import embedder, pipeline

    own, companion = waiting_to_embed(hr, monkeypatch, 2)
    requeued: list[int] = []

    def model_gone(texts):
        raise ConnectionError("the embedding model's server went away")

    with monkeypatch.context() as broken:
        broken.setattr(embedder, "embed", model_gone)
        broken.setattr(pipeline, "enqueue_embed", requeued.append)
        with pytest.raises(ConnectionError):
            pipeline.version_embed(version_id=own.pk)
    assert requeued == [companion.pk]  # the own version is retried by its task
    for version in (own, companion):
        current = version_of_doc(version.document_id)
        assert current.stage == Stage.EMBEDDING and current.claimed_until is None
    assert vector_store().count() == 0
    pipeline.version_embed(version_id=companion.pk)
    pipeline.version_embed(version_id=own.pk)
    assert {version_of_doc(v.document_id).stage for v in (own, companion)} == {Stage.READY}


def test_the_reconciler_leaves_a_live_claim_alone(pipeline, hr, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from ingest import pipeline

    (version,) = waiting_to_embed(hr, monkeypatch, 1)
    requeued: list[int] = []
    monkeypatch.setattr(pipeline, "enqueue_embed", requeued.append)
    long_ago = timezone.now() - timedelta(hours=1)
    claimed = DocumentVersion.objects.filter(pk=version.pk)
    claimed.update(updated_at=long_ago, claimed_until=timezone.now() + timedelta(minutes=5))
    assert pipeline.ingest_reconcile(stale_after=timedelta(minutes=15)) == 0
    claimed.update(claimed_until=long_ago)  # its holder went quiet
    assert pipeline.ingest_reconcile(stale_after=timedelta(minutes=15)) == 1
    assert requeued == [version.pk]
    assert claimed.get().claimed_until is None


def test_a_failed_activation_is_finished_by_the_retry(pipeline, hr, monkeypatch):
    from ingest import pipeline
    from ingest.vectors.edge import EdgeStore

    (version,) = waiting_to_embed(hr, monkeypatch, 1)
    with monkeypatch.context() as broken:

        def store_gone(self, **kwargs):
            raise ConnectionError("the vector store went away")

        broken.setattr(EdgeStore, "set_live", store_gone)
        with pytest.raises(ConnectionError):
            pipeline.version_embed(version_id=version.pk)
    assert version_of_doc(version.document_id).stage == Stage.INDEXING
    pipeline.version_embed(version_id=version.pk, companions=False)
    assert version_of_doc(version.document_id).stage == Stage.READY
    assert found(hr, "locker code") == [version.document_id]


def test_a_companion_whose_activation_failed_goes_back_to_the_queue(pipeline, hr, monkeypatch):
    from ingest import pipeline
    from ingest.vectors.edge import EdgeStore

    own, companion = waiting_to_embed(hr, monkeypatch, 2)
    requeued: list[int] = []
    real = EdgeStore.set_live
    with monkeypatch.context() as broken:

        def flaky(self, *, document_id, version):
            if document_id == companion.document_id:
                raise ConnectionError("the vector store went away")
            return real(self, document_id=document_id, version=version)

        broken.setattr(EdgeStore, "set_live", flaky)
        broken.setattr(pipeline, "enqueue_embed", requeued.append)
        pipeline.version_embed(version_id=own.pk)
    assert version_of_doc(own.document_id).stage == Stage.READY
    assert requeued == [companion.pk]
    pipeline.version_embed(version_id=companion.pk)  # its message, delivered again
    assert version_of_doc(companion.document_id).stage == Stage.READY


def test_a_bad_companion_does_not_fail_the_version_that_took_it(pipeline, hr, monkeypatch):
    from ingest import embedder, pipeline
    from ingest.tasks import version_embed_task

    own, companion = waiting_to_embed(hr, monkeypatch, 2)
    bad = {c.embedding_text for c in Chunk.objects.filter(version_id=companion.pk)}
    real = embedder.embed

    def choking(texts):
        if bad & set(texts):
            raise ValueError("the model cannot read this passage")
        return real(texts)

    monkeypatch.setattr(embedder, "embed", choking)
    requeued: list[int] = []
    monkeypatch.setattr(pipeline, "enqueue_embed", requeued.append)
    version_embed_task.apply(args=[own.pk], throw=False)
    assert version_of_doc(own.document_id).stage == Stage.READY  # retried alone
    assert requeued == [companion.pk]
    assert version_of_doc(companion.document_id).stage == Stage.EMBEDDING


def test_delete_leaves_nothing_behind(pipeline, hr, tmp_path):
    (result,) = upload_file(hr, files.make("docx", tmp_path))
    document = Document.objects.get(pk=result.document.pk)
    sha = version_of(result).sha256
    assert vector_store().count(document_id=document.pk) > 0
    document_delete(document=document, actor=SYSTEM)
    assert vector_store().count(document_id=document.pk) == 0
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    assert not storage.path_for(sha).exists()
    assert AuditEvent.objects.filter(action="document.delete").exists()


@pytest.mark.parametrize(
    ("name", "make_bytes", "message"),
    [
        ("empty.txt", lambda tmp: b"", "the file is empty"),
        ("corrupt.pdf", lambda tmp: b"%PDF-1.7\n" + bytes(range(256)) * 40, "damaged"),
        ("report.pdf", lambda tmp: b"just text, honestly", "is not a PDF"),
        ("memo.docx", lambda tmp: b"plain text pretending", "not a DOCX document"),
        (
            "locked.pdf",
            lambda tmp: files.write_pdf(
                tmp / "l.pdf", ["Secret plans"], password="pw"
            ).read_bytes(),
            "password-protected",
        ),
        ("blob.txt", lambda tmp: b"x" * 5_000_000, "no readable text"),
        (
            "broken.docx",
            lambda tmp: files.zip_bytes(
                {"[Content_Types].xml": b"<Types", "word/document.xml": b"<w:document"}
            ),
            "damaged, or it is not a DOCX file",
        ),
    ],
)
def test_bad_files_fail_clearly_and_harm_nothing(pipeline, hr, tmp_path, name, make_bytes, message):
    (good,) = upload_file(hr, files.make("md", tmp_path))
    (bad,) = upload(hr, name, make_bytes(tmp_path))
    version = version_of(bad)
    assert version.stage == Stage.FAILED
    assert message in version.error
    assert version_of(good).stage == Stage.READY
    assert found(hr, files.FACTS["md"]) == [good.document.pk]
    assert vector_store().count(document_id=bad.document.pk) == 0


def test_file_over_the_size_limit_is_refused(pipeline, hr, settings):
    settings.KB_MAX_UPLOAD_MB = 1
    (result,) = upload(hr, "big.txt", b"word " * 300_000)
    assert result.document is None and "larger than the 1 MB limit" in result.error
    assert not list(storage.files_dir().glob(".upload-*"))


def test_zip_members_become_documents_and_hostile_entries_are_refused(pipeline, hr, tmp_path):
    inner_most = files.zip_bytes({"deep.txt": b"too deep"})
    inner = files.zip_bytes({"level2.zip": inner_most, "ok2.txt": b"Nested fine text about kites."})
    archive = files.zip_bytes(
        {
            "a.txt": b"Archive text about sailing boats.",
            "sub/b.md": b"# Boats\n\nMarkdown about rowing.",
            "../escape.txt": b"should never land",
            "/abs.txt": b"absolute",
            "level1.zip": inner,
        }
    )
    results = upload(hr, "bundle.zip", archive)
    by_path = {r.path: r for r in results}
    assert by_path["bundle.zip/a.txt"].document is not None
    assert by_path["bundle.zip/sub/b.md"].document is not None
    assert by_path["bundle.zip/level1.zip/ok2.txt"].document is not None
    assert "leaves the archive" in by_path["bundle.zip/../escape.txt"].error
    assert "leaves the archive" in by_path["bundle.zip//abs.txt"].error
    assert "nested deeper" in by_path["bundle.zip/level1.zip/level2.zip"].error
    assert not (tmp_path.parent / "escape.txt").exists()
    assert Document.objects.filter(path__contains="escape").count() == 0


def test_zip_bomb_is_refused(pipeline, hr):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.txt", b"0" * 50_000_000)
        archive.writestr("fine.txt", b"A fine small file about apples.")
    results = {r.path: r for r in upload(hr, "bomb.zip", buffer.getvalue())}
    assert "zip bomb" in results["bomb.zip/bomb.txt"].error
    assert results["bomb.zip/fine.txt"].document is not None


def test_api_upload_status_list_and_delete(pipeline, hr, alice, bob, charlie, tmp_path):
    owner = logged_in(alice)
    path = files.make("txt", tmp_path)
    with path.open("rb") as one, io.BytesIO(b"") as empty:
        empty.name = "empty.txt"
        response = owner.post("/api/v1/collections/hr/documents", {"file": [one, empty]})
    assert response.status_code == 202
    created, empty = response.json()
    assert created["status"] == "queued" and created["title"] == "sample"
    failed = owner.get(f"/api/v1/documents/{empty['id']}").json()
    assert (failed["status"], failed["error"]) == ("failed", "the file is empty")
    detail = owner.get(f"/api/v1/documents/{created['id']}").json()
    assert detail["stage"] == "ready" and detail["progress"] == 1.0 and detail["chunks"] >= 1
    assert detail["sha256"] == version_of_doc(created["id"]).sha256
    listing = owner.get("/api/v1/collections/hr/documents?limit=1").json()
    assert listing["count"] == 2 and len(listing["items"]) == 1
    reader, outsider = logged_in(bob), logged_in(charlie)
    with path.open("rb") as again:
        assert reader.post("/api/v1/collections/hr/documents", {"file": again}).status_code == 403
    assert outsider.get(f"/api/v1/documents/{created['id']}").status_code == 404
    assert outsider.delete(f"/api/v1/documents/{created['id']}").status_code == 404
    assert owner.delete(f"/api/v1/documents/{created['id']}").status_code == 204
    assert owner.get(f"/api/v1/documents/{created['id']}").status_code == 404


def test_api_readers_see_what_the_web_shows_them_and_editors_reingest(
    pipeline, hr, alice, bob, charlie, tmp_path
):
    path = files.make("txt", tmp_path)
    (result,) = upload_file(hr, path)
    document_id = result.document.pk
    reader, outsider, owner = logged_in(bob), logged_in(charlie), logged_in(alice)
    listing = reader.get("/api/v1/collections/hr/documents").json()
    assert [item["id"] for item in listing["items"]] == [document_id]
    assert reader.get(f"/api/v1/documents/{document_id}").json()["status"] == "ready"
    content = reader.get(f"/api/v1/documents/{document_id}/content")
    assert content.status_code == 200 and content.getvalue() == path.read_bytes()
    assert 'filename="sample.txt"' in content["Content-Disposition"]
    assert AuditEvent.objects.filter(action="document.download", actor_name=bob.username).exists()
    for denied in ("", "/content"):
        assert outsider.get(f"/api/v1/documents/{document_id}{denied}").status_code == 404
    assert outsider.get("/api/v1/collections/hr/documents").status_code == 404
    assert reader.post(f"/api/v1/documents/{document_id}/reingest").status_code == 403
    again = owner.post(f"/api/v1/documents/{document_id}/reingest")
    assert again.status_code == 202
    assert version_of_doc(document_id).number == 2
    assert version_of_doc(document_id).stage == Stage.READY


def test_api_lists_page_by_cursor(pipeline, hr, bob):
    for name in ("c.txt", "a.txt", "b.txt"):
        upload(hr, name, f"A note called {name}.".encode())
    reader = logged_in(bob)
    first = reader.get("/api/v1/collections/hr/documents?limit=2").json()
    assert [d["filename"] for d in first["items"]] == ["a.txt", "b.txt"] and first["count"] == 3
    upload(hr, "a2.txt", b"Added while paging, before the cursor.")
    second = reader.get(f"/api/v1/collections/hr/documents?limit=2&cursor={first['next_cursor']}")
    assert [d["filename"] for d in second.json()["items"]] == ["c.txt"]
    assert second.json()["next_cursor"] is None
    for cursor in ("nonsense", "WyJ4Il0", "WyJhIiwgImIiXQ"):  # not base64 JSON; [x]; [a, b]
        bad = reader.get(f"/api/v1/collections/hr/documents?cursor={cursor}")
        assert bad.status_code == 400 and bad.json()["code"] == "bad_request"


def version_of_doc(document_id: int) -> DocumentVersion:
    return DocumentVersion.objects.filter(document_id=document_id).latest("number")


def test_web_requests_do_not_load_the_ml_stack(tmp_path):
    code = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'server.settings'\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "Client().get('/healthz'); Client().get('/api/v1/collections')\n"
        "heavy = ('torch', 'sentence_transformers', 'onnxruntime', 'unstructured', 'llama_index')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"KB_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert "heavy: []" in result.stdout


def test_ingest_folder_skips_unchanged_files(pipeline, hr, tmp_path):
    from django.core.management import call_command

    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    files.make("md", folder / "sub")
    files.make("html", folder)
    out = io.StringIO()
    call_command("ingest_folder", "hr", str(folder), "--wait", stdout=out, stderr=io.StringIO())
    assert out.getvalue().strip().splitlines()[-1].startswith("ingest files=2 ready=2 failed=0 ")
    assert Document.objects.filter(path="sub/sample.md").exists()
    out = io.StringIO()
    call_command("ingest_folder", "hr", str(folder), "--wait", stdout=out, stderr=io.StringIO())
    assert "queued 0 files, 2 unchanged" in out.getvalue()


def test_ingest_folder_refuses_links_that_lead_outside_the_folder(pipeline, hr, tmp_path):
    from django.core.management import call_command

    secret = tmp_path / "outside" / "passwd.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    files.make("md", folder)
    (folder / "passwd.txt").symlink_to(secret)
    (folder / "inside.md").symlink_to(folder / "sample.md")  # a link within is fine
    out, err = io.StringIO(), io.StringIO()
    call_command("ingest_folder", "hr", str(folder), "--wait", stdout=out, stderr=err)
    assert "refused passwd.txt: a link to a file outside" in err.getvalue()
    assert "1 refused" in out.getvalue()
    assert not Document.objects.filter(path="passwd.txt").exists()
    assert not Chunk.objects.filter(text__contains="root:x:0:0").exists()


def test_a_pdf_past_the_page_counters_limit_is_still_read(pipeline, hr, tmp_path):
    # pypdf's page count trips its own limit on an array of over 100,000 items, which
    # some real filings hold; pdfminer reads them.
    junk = b"/Junk [" + b"0 " * 100_001 + b"]"
    path = files.write_plain_pdf(tmp_path / "filing.pdf", files.FACTS["pdf"], pages_extra=junk)
    (result,) = upload_file(hr, path)
    version = version_of(result)
    assert version.stage == Stage.READY, version.error
    assert result.document.pk in found(hr, files.FACTS["pdf"])


def test_a_version_that_keeps_killing_its_worker_fails_after_the_attempts(pipeline, hr, settings):
    from ingest import pipeline

    settings.KB_PARSE_ATTEMPTS = 3
    (poison,) = upload(hr, "poison.txt", b"A file whose parse kills the worker.\n")
    (other,) = upload(hr, "other.txt", b"An ordinary file, stuck behind it.\n")
    # Each owner died mid-parse: left in `parsing`, started 3 and 1 times.
    DocumentVersion.objects.filter(pk=poison.version.pk).update(stage=Stage.PARSING, attempts=3)
    DocumentVersion.objects.filter(pk=other.version.pk).update(stage=Stage.PARSING, attempts=1)
    pipeline.ingest_reconcile()
    poisoned, retried = version_of(poison), version_of(other)
    assert poisoned.stage == Stage.FAILED and "stopped 3 times" in poisoned.error
    assert retried.stage == Stage.READY


def test_a_document_of_too_many_parts_fails_before_chunking_and_harms_nothing(
    pipeline, hr, settings
):
    settings.KB_MAX_ELEMENTS = 5
    text = "\n\n".join(f"Paragraph {n} of a very long list." for n in range(20))
    (long,) = upload(hr, "long.txt", text.encode())
    (short,) = upload(hr, "short.txt", b"One paragraph only.\n")
    failed = version_of(long)
    assert failed.stage == Stage.FAILED and "(KB_MAX_ELEMENTS)" in failed.error
    assert not Chunk.objects.filter(version=failed).exists()
    assert version_of(short).stage == Stage.READY


def test_small_files_waiting_are_parsed_in_one_round_trip_and_embedded_from_one_message(
    pipeline, hr, monkeypatch
):
    # 10,000 small files went at a child round trip, stage writes and an embedding
    # message each (bench/ingest_many.py): waiting ones now go together.
    from ingest import isolated, pipeline, term_stats
    from ingest.models import TermCount

    with monkeypatch.context() as held:
        held.setattr(pipeline, "enqueue_parse", lambda version_id: None)  # all waiting
        results = [
            upload(hr, f"memo-{n}.txt", f"Memo {n}: the locker code is {n}{n}{n}.\n".encode())
            for n in range(5)
        ]
    versions = [version_of(result) for (result,) in results]
    batches: list[int] = []
    messages: list[list[int]] = []
    real_batch, real_enqueue = isolated.extract_batch_isolated, pipeline.enqueue_embed_many

    def batch(jobs, **kwargs):
        batches.append(len(jobs))
        return real_batch(jobs, **kwargs)

    def enqueue(version_ids):
        messages.append(version_ids)
        real_enqueue(version_ids)

    monkeypatch.setattr(pipeline, "extract_batch_isolated", batch)
    monkeypatch.setattr(pipeline, "enqueue_embed_many", enqueue)
    pipeline.version_parse(version_id=versions[0].pk)
    assert batches == [5]
    assert messages == [[v.pk for v in versions]]
    assert {version_of(result).stage for (result,) in results} == {Stage.READY}
    assert set(found(hr, "locker code")) == {v.document_id for v in versions}
    assert all(version_of(result).attempts == 1 for (result,) in results)
    # Their own messages, and the embedding message delivered again, change nothing.
    for version in versions:
        pipeline.version_parse(version_id=version.pk)
    pipeline.versions_embed(version_ids=messages[0])
    assert batches == [5]
    assert Chunk.objects.count() == 5
    assert vector_store().count(live_only=True) == vector_store().count() == 5
    # New versions of two of them, and a new file, go live together: the old versions'
    # passages and vectors go, and the term counts follow.
    with monkeypatch.context() as held:
        held.setattr(pipeline, "enqueue_parse", lambda version_id: None)
        changed = [
            upload(hr, f"memo-{n}.txt", f"Memo {n}: the badge pin is {n}{n}.\n".encode())
            for n in (1, 3)
        ] + [upload(hr, "memo-9.txt", b"Memo 9: the badge pin is 99.\n")]
    pipeline.version_parse(version_id=version_of(changed[0][0]).pk)
    assert batches == [5, 3]
    assert {version_of(result).stage for (result,) in changed} == {Stage.READY}
    assert not Chunk.objects.filter(version__in=[versions[1], versions[3]]).exists()
    for (result,) in changed:
        assert Document.objects.get(pk=result.document.pk).live_version_id == result.version.pk
    assert set(found(hr, "badge pin")) == {versions[1].document_id, versions[3].document_id} | {
        changed[2][0].document.pk
    }
    assert Chunk.objects.count() == 6
    assert vector_store().count(live_only=True) == vector_store().count() == 6
    counts = TermCount.objects.filter(collection=hr, passages__gt=0)
    assert dict(counts.values_list("term", "passages")) == dict(term_stats.live_counts(hr.pk))


def test_an_archive_of_many_small_files_is_stored_in_batches_each_file_audited(
    pipeline, hr, monkeypatch
):
    # 10,000 small files went at a transaction and a parse message each
    # (bench/ingest_many.py): an upload now stores them UPLOAD_BATCH at a time.
    from ingest import isolated, pipeline
    from ingest.services import UPLOAD_BATCH

    memos = {
        f"memo-{n:02}.md": f"# Memo {n}\n\nThe shelf code is {n}{n}.\n".encode() for n in range(70)
    }
    memos["memo-dup.md"] = memos["memo-05.md"]
    memos["sheet.exe"] = b"not a document"
    archive = files.zip_bytes(memos)
    messages: list[list[int]] = []
    parses: list[int] = []
    real_enqueue, real_batch = pipeline.enqueue_parse_many, isolated.extract_batch_isolated

    def enqueue(version_ids):
        messages.append(version_ids)
        real_enqueue(version_ids)

    def batch(jobs, **kwargs):
        parses.append(len(jobs))
        return real_batch(jobs, **kwargs)

    monkeypatch.setattr(pipeline, "enqueue_parse_many", enqueue)
    monkeypatch.setattr(pipeline, "extract_batch_isolated", batch)
    results = upload(hr, "memos.zip", archive)

    assert [r.path for r in results] == [f"memos.zip/{name}" for name in memos]
    assert results[-1].error == ".exe: not a supported format"
    assert results[-2].duplicate and results[-2].document.pk == results[5].document.pk
    assert [len(m) for m in messages] == [UPLOAD_BATCH, UPLOAD_BATCH, 70 - 2 * UPLOAD_BATCH]
    assert sum(parses) == 70
    assert {version_of(r).stage for r in results[:70]} == {Stage.READY}
    assert found(hr, "shelf code 6969")[0] == results[69].document.pk
    audited = AuditEvent.objects.filter(action="document.upload")
    assert audited.count() == 72 and audited.filter(outcome="denied").count() == 1
    # A batch message delivered again finds its versions done and parses nothing.
    pipeline.versions_parse(version_ids=messages[0])
    assert sum(parses) == 70 and Chunk.objects.count() == 70


def test_one_batch_sees_its_own_files_a_copy_and_a_new_version_of_a_path(pipeline, hr):
    # A batch reads what the collection holds once, then keeps it current itself.
    first, second = b"# Plan\n\nThe dock opens at six.\n", b"# Plan\n\nThe dock opens at nine.\n"
    stored = [("plan.md", first), ("copy.md", first), ("plan.md", second), ("again.md", first)]
    results = list(
        documents_store(collection=hr, actor=SYSTEM, files=[(p, io.BytesIO(d)) for p, d in stored])
    )

    plan, copy, plan_again, again = results
    assert copy.duplicate and again.duplicate and not plan_again.duplicate
    first_version, second_version = version_of(plan), version_of(plan_again)
    assert version_of(copy) == version_of(again) == first_version
    assert first_version.document_id == second_version.document_id
    assert [first_version.number, second_version.number] == [1, 2]
    assert Document.objects.filter(collection=hr).count() == 1
    assert {version_of(r).stage for r in (plan, plan_again)} == {Stage.READY}


def test_collection_reingest_processes_every_document_again(pipeline, hr, monkeypatch):
    # After a change of embedding model every document must be embedded again:
    # ingest_folder skips the files it holds, and the API re-ingests one at a time.
    from django.core.management import call_command

    from ingest import pipeline

    results = [
        upload(hr, f"memo-{n}.txt", f"Memo {n}: the gate code is {n}{n}.\n".encode())
        for n in range(3)
    ]
    messages: list[list[int]] = []
    real_enqueue = pipeline.enqueue_parse_many

    def enqueue(version_ids):
        messages.append(version_ids)
        real_enqueue(version_ids)

    monkeypatch.setattr(pipeline, "enqueue_parse_many", enqueue)
    out = io.StringIO()
    call_command("collection_reingest", "hr", "--wait", stdout=out, stderr=io.StringIO())
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("reingest documents=3 ready=3 failed=0 ")
    assert len(messages) == 1  # one message for the batch
    for (result,) in results:
        document = Document.objects.select_related("live_version").get(pk=result.document.pk)
        assert document.live_version is not None and document.live_version.number == 2
    assert AuditEvent.objects.filter(action="document.reingest").count() == 3
    assert Chunk.objects.count() == 3  # the old versions' passages are gone
    assert set(found(hr, "gate code")) == {r.document.pk for (r,) in results}
