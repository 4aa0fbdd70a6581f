"""Reads of documents, always through the collection access selector."""

from django.db.models import QuerySet
from django.http import Http404

from ingest.models import Document, DocumentVersion, Stage
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
