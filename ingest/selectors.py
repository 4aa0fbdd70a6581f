"""Reads of documents, always through the collection access selector.

A read that shows a person a document's content or metadata writes its audit row here
(`document_read`, `documents_read`, `passage_read`, `document_file`), so the web pages
and the REST API record the same row for the same read. So does a refusal: these, and
`collection_access` / `document_access` for writes, audit a denied attempt.
"""

import contextlib
from collections.abc import Iterator

from django.db.models import Count, F, OuterRef, QuerySet, Subquery
from django.http import Http404

from ingest.models import ACTIVE_STAGES, Chunk, Document, DocumentVersion, Stage
from kb.audit import audit_record
from kb.models import Collection, Outcome, Role
from kb.principal import Principal
from kb.selectors import ReadOnlyAccess, collection_get, collection_roles


@contextlib.contextmanager
def _denial_audited(principal: Principal, action: str, **detail: object) -> Iterator[None]:
    """A refused attempt is recorded as denied; what was asked for goes in the detail
    (not the collections column, which would confirm that it exists)."""
    try:
        yield
    except (Http404, ReadOnlyAccess):
        audit_record(action=action, actor=principal, outcome=Outcome.DENIED, detail=detail)
        raise


def collection_access(
    principal: Principal, slug: str, *, role: Role, action: str
) -> tuple[Collection, Role]:
    """As kb.selectors.collection_get, with a refusal audited as `action`."""
    with _denial_audited(principal, action, collection=slug):
        return collection_get(principal, slug, role=role)


def document_access(principal: Principal, document_id: int, *, role: Role, action: str) -> Document:
    """As document_get, with a refusal audited as `action`."""
    with _denial_audited(principal, action, document_id=document_id):
        return document_get(principal, document_id, role=role)


def document_get(principal: Principal, document_id: int, *, role: Role = Role.READER) -> Document:
    """The document if the principal holds `role` in its collection; else as collection_get."""
    document = (
        Document.objects.select_related("collection", "live_version").filter(pk=document_id).first()
    )
    held = collection_roles(principal).get(document.collection_id) if document else None
    if document is None or held is None:
        raise Http404("No such document.")
    if held < role:
        raise ReadOnlyAccess(
            f"You need the {role.label} role in {document.collection.slug} to do this."
        )
    return document


def document_read(principal: Principal, document_id: int, *, role: Role = Role.READER) -> Document:
    """As document_get, recorded as a read of its metadata."""
    document = document_access(principal, document_id, role=role, action="document.read")
    audit_record(
        action="document.read",
        actor=principal,
        collections=[document.collection.slug],
        detail={"document_id": document.pk},
    )
    return document


def documents_read(principal: Principal, collection: Collection) -> QuerySet[Document]:
    """The collection's documents (access already checked), recorded as a listing."""
    audit_record(action="document.list", actor=principal, collections=[collection.slug])
    return documents_of(collection)


def passage_read(
    principal: Principal, chunk_id: int, *, context: int
) -> tuple[Document, Chunk, QuerySet[Chunk]]:
    """A passage with `context` passages either side, recorded as read."""
    with _denial_audited(principal, "passage.read", chunk_id=chunk_id):
        chunk = Chunk.objects.filter(pk=chunk_id).first()
        if chunk is None:
            raise Http404("No such passage.")
        document = document_get(principal, chunk.document_id)
    around = Chunk.objects.filter(
        version_id=chunk.version_id,
        index__gte=chunk.index - context,
        index__lte=chunk.index + context,
    ).order_by("index")
    audit_record(
        action="passage.read",
        actor=principal,
        collections=[document.collection.slug],
        chunk_ids=[chunk.pk],
    )
    return document, chunk, around


def document_file(principal: Principal, document_id: int) -> tuple[Document, DocumentVersion]:
    """The document's current file, recorded as downloaded."""
    with _denial_audited(principal, "document.download", document_id=document_id):
        document = document_get(principal, document_id)
        version = version_current(document)
        if version is None:
            raise Http404("No file.")
    audit_record(
        action="document.download",
        actor=principal,
        collections=[document.collection.slug],
        detail={"document_id": document.pk, "version": version.number},
    )
    return document, version


def version_current(document: Document) -> DocumentVersion | None:
    """The version a person sees: the live one, else the newest still on its way."""
    return document.live_version or latest_version(document)


def collection_counts(collection_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Collection id -> (documents, searchable passages)."""
    documents = dict(
        Document.objects.filter(collection_id__in=collection_ids)
        .values("collection_id")
        .annotate(n=Count("pk"))
        .values_list("collection_id", "n")
    )
    passages = dict(
        Chunk.objects.filter(
            collection_id__in=collection_ids, version_id=F("document__live_version_id")
        )
        .values("collection_id")
        .annotate(n=Count("pk"))
        .values_list("collection_id", "n")
    )
    return {pk: (documents.get(pk, 0), passages.get(pk, 0)) for pk in collection_ids}


def documents_of(collection: Collection) -> QuerySet[Document]:
    return (
        Document.objects.filter(collection=collection)
        .select_related("collection", "live_version")
        .order_by("path")
    )


def latest_version(document: Document) -> DocumentVersion | None:
    return document.versions.order_by("-number").first()


def status_of(stage: str) -> str:
    if stage in (Stage.QUEUED, Stage.READY, Stage.FAILED):
        return stage
    return "processing"


def documents_listed(collection: Collection) -> QuerySet[Document]:
    """The collection's documents, each with its newest version's state annotated
    (`stage`, `progress`, `error`, `filename`, `number`, `chunk_count`)."""
    latest = DocumentVersion.objects.filter(document=OuterRef("pk")).order_by("-number")
    return documents_of(collection).annotate(
        latest_stage=Subquery(latest.values("stage")[:1]),
        latest_progress=Subquery(latest.values("progress")[:1]),
        latest_error=Subquery(latest.values("error")[:1]),
        latest_filename=Subquery(latest.values("filename")[:1]),
        latest_number=Subquery(latest.values("number")[:1]),
        latest_chunk_count=Subquery(latest.values("chunk_count")[:1]),
    )


def document_counts(collection_ids: list[int]) -> dict[int, int]:
    counts = (
        Document.objects.filter(collection_id__in=collection_ids)
        .values("collection_id")
        .annotate(n=Count("pk"))
    )
    return {row["collection_id"]: row["n"] for row in counts}


def document_status_counts() -> dict[str, int]:
    """Documents by the stage of their newest version."""
    newest = DocumentVersion.objects.filter(document=OuterRef("document")).order_by("-number")
    rows = (
        DocumentVersion.objects.filter(pk=Subquery(newest.values("pk")[:1]))
        .values("stage")
        .annotate(n=Count("pk"))
    )
    return {row["stage"]: row["n"] for row in rows}


def collection_busy(collection: Collection) -> bool:
    """Whether any of the collection's documents is still being processed."""
    return DocumentVersion.objects.filter(
        document__collection=collection, stage__in=ACTIVE_STAGES
    ).exists()
