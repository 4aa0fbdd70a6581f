"""Writes for documents: upload, re-ingest and delete. What happens to a version after
it is stored, stage by stage, is ingest.pipeline."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import IO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max

from ingest import archives, pipeline, storage, term_stats
from ingest.filetypes import TYPES
from ingest.models import Document, DocumentVersion, Stage
from ingest.selectors import version_current
from ingest.vectors import vector_store
from kb import services as kb_services
from kb.audit import Actor, audit_record
from kb.models import Collection, Outcome
from kb.principal import Principal

READ_SIZE = 1 << 20


@dataclass(frozen=True)
class UploadResult:
    """One file of an upload: its document, or why it was refused."""

    path: str
    document: Document | None = None
    version: DocumentVersion | None = None
    duplicate: bool = False
    error: str = ""


def _max_bytes() -> int:
    return settings.KB_MAX_UPLOAD_MB * 1_000_000


def _title(path: str) -> str:
    return PurePosixPath(path).stem.replace("_", " ").replace("-", " ").strip() or path


def _read(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(READ_SIZE):
        yield chunk


# Files stored UPLOAD_BATCH to a transaction and to one parse message (each still has
# its own rows and audit row): for a folder or an archive of small files, the commit and
# the message per file took as long as the rest of storing it (bench/ingest_many.py).
UPLOAD_BATCH = 32


def documents_upload(
    *, collection: Collection, actor: Principal | Actor, files: Iterable[UploadedFile[bytes]]
) -> list[UploadResult]:
    """The files of one upload (web form or REST), each stored as document_upload does."""
    named = ((upload.name or "unnamed", upload) for upload in files)
    return list(documents_store(collection=collection, actor=actor, files=named))


def document_upload(
    *,
    collection: Collection,
    actor: Principal | Actor,
    path: str,
    stream: IO[bytes],
) -> list[UploadResult]:
    """Store one uploaded file (a zip gives one result per member) and queue its work."""
    return list(documents_store(collection=collection, actor=actor, files=[(path, stream)]))


def documents_store(
    *, collection: Collection, actor: Principal | Actor, files: Iterable[tuple[str, IO[bytes]]]
) -> Iterator[UploadResult]:
    """Each (path, stream) stored, a zip's members each, and its work queued; results in
    order, UPLOAD_BATCH at a time. A stream is read before the next is asked for."""
    pending: list[tuple[str, storage.Stored | str]] = []
    for path, stream in files:
        for item in _stored(path, stream):
            pending.append(item)
            if len(pending) == UPLOAD_BATCH:
                yield from _record(collection, actor, pending)
                pending = []
    yield from _record(collection, actor, pending)


def _stored(path: str, stream: IO[bytes]) -> Iterator[tuple[str, storage.Stored | str]]:
    """(path, its stored bytes, or why it is refused) for a file, or for each member of
    an archive."""
    if not archives.is_archive(path):
        yield _store_file(path, _read(stream))
        return
    try:
        for member in archives.members(stream, prefix=path, max_bytes=_max_bytes()):
            if member.stream is None:
                yield member.path, member.error
                continue
            try:
                yield _store_file(member.path, _read(member.stream))
            except archives.ArchiveError as error:
                yield member.path, f"refused: {error}"
    except archives.ArchiveError as error:
        yield path, str(error)


def _store_file(path: str, chunks: Iterable[bytes]) -> tuple[str, storage.Stored | str]:
    path = path.strip().lstrip("/")[:1000] or "unnamed"
    extension = PurePosixPath(path).suffix.lower()
    if extension not in TYPES:
        return path, f"{extension or 'no extension'}: not a supported format"
    try:
        return path, storage.store(chunks, limit=_max_bytes())
    except storage.TooLarge as error:
        return path, str(error)


def _record(
    collection: Collection, actor: Principal | Actor, items: list[tuple[str, storage.Stored | str]]
) -> list[UploadResult]:
    """The rows of stored files (or the refusal of the others), in one transaction; then
    one message parses the new versions."""
    if not items:
        return []
    with transaction.atomic():
        known = _Known.read(collection, [(p, s) for p, s in items if not isinstance(s, str)])
        results = [
            _refuse(collection, actor, path, stored)
            if isinstance(stored, str)
            else _record_one(collection, actor, path, stored, known)
            for path, stored in items
        ]
        _parse_after_commit(
            [r.version.pk for r in results if r.version is not None and not r.duplicate]
        )
    return results


def _parse_after_commit(version_ids: list[int]) -> None:
    """One parse message for the new versions of a transaction, once it has committed."""
    if version_ids:
        transaction.on_commit(partial(pipeline.enqueue_parse_many, version_ids))


def _refuse(
    collection: Collection, actor: Principal | Actor, path: str, error: str
) -> UploadResult:
    audit_record(
        action="document.upload",
        actor=actor,
        outcome=Outcome.DENIED,
        collections=[collection.slug],
        detail={"path": path, "error": error},
    )
    return UploadResult(path=path, error=error)


@dataclass
class _Known:
    """What the collection holds for the files of one batch, read in three queries
    rather than three per file, and kept current as the batch adds to it."""

    documents: dict[str, Document]  # by path, locked until the batch commits
    by_content: dict[str, DocumentVersion]  # the newest version not failed, by sha256
    last_numbers: dict[int, int]  # by document id

    @classmethod
    def read(cls, collection: Collection, items: list[tuple[str, storage.Stored]]) -> "_Known":
        documents = {
            document.path: document
            for document in Document.objects.select_for_update().filter(
                collection=collection, path__in=[path for path, _ in items]
            )
        }
        by_content: dict[str, DocumentVersion] = {}
        for version in (
            DocumentVersion.objects.filter(
                document__collection=collection, sha256__in={s.sha256 for _, s in items}
            )
            .exclude(stage=Stage.FAILED)
            .select_related("document")
            .order_by("-number")
        ):
            by_content.setdefault(version.sha256, version)
        return cls(documents, by_content, _last_numbers(documents.values()))


def _last_numbers(documents: Iterable[Document]) -> dict[int, int]:
    """Document id -> its last version number, for documents that have versions."""
    return dict(
        DocumentVersion.objects.filter(document__in=list(documents))
        .values_list("document_id")
        .annotate(n=Max("number"))
    )


def _record_one(
    collection: Collection,
    actor: Principal | Actor,
    path: str,
    stored: storage.Stored,
    known: _Known,
) -> UploadResult:
    duplicate = known.by_content.get(stored.sha256)
    if duplicate is not None:
        # Same content already here (under this or another name): nothing to do.
        audit_record(
            action="document.upload",
            actor=actor,
            collections=[collection.slug],
            detail={"path": path, "document_id": duplicate.document_id, "duplicate": True},
        )
        return UploadResult(path, duplicate.document, duplicate, duplicate=True)
    document = known.documents.get(path)
    if document is None:
        document = Document.objects.create(
            collection=collection,
            path=path,
            title=_title(path),
            created_by=actor.user if isinstance(actor, Principal) else None,
        )
        known.documents[path] = document
    version = _new_version(
        document, stored, path, number=known.last_numbers.get(document.pk, 0) + 1
    )
    known.last_numbers[document.pk] = version.number
    known.by_content[stored.sha256] = version
    audit_record(
        action="document.upload",
        actor=actor,
        collections=[collection.slug],
        detail={"path": path, "document_id": document.pk, "version": version.number},
    )
    return UploadResult(path, document, version)


def _new_version(
    document: Document, stored: storage.Stored, path: str, *, number: int
) -> DocumentVersion:
    return DocumentVersion.objects.create(
        document=document,
        number=number,
        sha256=stored.sha256,
        size=stored.size,
        filename=PurePosixPath(path).name[:255],
        content_type=TYPES.get(PurePosixPath(path).suffix.lower(), "application/octet-stream"),
    )


def document_reingest(*, document: Document, actor: Principal | Actor) -> DocumentVersion:
    """Process the current file again as a new version; the old one serves until then."""
    source = version_current(document)
    if source is None:
        raise ValueError("the document has no file to re-ingest")
    with transaction.atomic():
        number = _last_numbers([document])[document.pk] + 1
        version = _reingest(document, source, actor, number=number)
        _parse_after_commit([version.pk])
    return version


def documents_reingest(*, collection: Collection, actor: Principal | Actor) -> list[int]:
    """Every document of the collection processed again (after a change of embedding
    model: each model has its own vector collection), UPLOAD_BATCH to a transaction and
    a parse message; the ids of the new versions."""
    documents = list(
        Document.objects.filter(collection=collection)
        .select_related("collection", "live_version")
        .order_by("pk")
    )
    new: list[int] = []
    for start in range(0, len(documents), UPLOAD_BATCH):
        part = documents[start : start + UPLOAD_BATCH]
        with transaction.atomic():
            numbers = _last_numbers(part)
            batch = [
                _reingest(document, source, actor, number=numbers[document.pk] + 1).pk
                for document in part
                if (source := version_current(document)) is not None
            ]
            _parse_after_commit(batch)
        new += batch
    return new


def _reingest(
    document: Document, source: DocumentVersion, actor: Principal | Actor, *, number: int
) -> DocumentVersion:
    stored = storage.Stored(source.sha256, source.size, storage.path_for(source.sha256))
    version = _new_version(document, stored, document.path, number=number)
    audit_record(
        action="document.reingest",
        actor=actor,
        collections=[document.collection.slug],
        detail={"document_id": document.pk, "version": version.number},
    )
    return version


def document_delete(*, document: Document, actor: Principal | Actor) -> None:
    """Remove the document, its passages, its vectors and (if unshared) its files."""
    hashes = set(document.versions.values_list("sha256", flat=True))
    with transaction.atomic():
        audit_record(
            action="document.delete",
            actor=actor,
            collections=[document.collection.slug],
            detail={"document_id": document.pk, "path": document.path},
        )
        locked = Document.objects.select_for_update().filter(pk=document.pk)
        live = locked.values_list("live_version_id", flat=True).first()
        term_stats.live_version_changed(collection_id=document.collection_id, new=None, old=live)
        document_id = document.pk
        document.delete()
    vector_store().delete(document_id=document_id)
    for sha256 in hashes:
        storage.remove_unless_used(sha256)


def collection_delete(*, collection: Collection, actor: Principal | Actor) -> None:
    """Remove the collection with every document in it, as document_delete removes one.
    Raises kb.services.CollectionOnHold, before anything goes, while it is on legal hold."""
    kb_services.collection_hold_check(collection)
    for document in Document.objects.filter(collection=collection):
        document_delete(document=document, actor=actor)
    kb_services.collection_delete(collection=collection, actor=actor)
