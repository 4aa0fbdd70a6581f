"""Reads of documents, always through the collection access selector."""

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import Http404

from ingest.models import ACTIVE_STAGES, Document, DocumentVersion, Stage
from kb.models import Collection, Role
from kb.principal import Principal
from kb.selectors import ReadOnlyAccess, collection_roles


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
