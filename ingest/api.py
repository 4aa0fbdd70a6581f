"""REST: /api/v1/collections/{slug}/documents and /api/v1/documents/{id}.

Readers list documents, read their metadata and download their originals, as the web
pages show them; editors and owners upload, re-ingest and delete."""

from datetime import datetime
from typing import Annotated

from django.http import FileResponse, HttpRequest
from django.urls import reverse
from ninja import File, Router, Schema, Status
from ninja.files import UploadedFile
from ninja.params.functions import Path as PathField

from ingest import selectors, services, storage
from ingest.models import Chunk, Document
from kb.api_auth import principal_of
from kb.ids import ID_MAX
from kb.models import Role
from kb.pagination import Cursor, Limit, page

router = Router(tags=["documents"])
DocumentId = Annotated[int, PathField(ge=1, le=ID_MAX)]
ChunkId = DocumentId


class UploadOut(Schema):
    id: int | None
    title: str
    status: str
    error: str = ""

    @staticmethod
    def of(result: services.UploadResult) -> "UploadOut":
        if result.document is None or result.version is None:
            return UploadOut(id=None, title=result.path, status="failed", error=result.error)
        return UploadOut(
            id=result.document.pk,
            title=result.document.title,
            status=selectors.status_of(result.version.stage),
        )


class DocumentOut(Schema):
    id: int
    collection: str
    title: str
    filename: str
    content_type: str
    sha256: str
    version: int
    live_version: int | None
    status: str
    stage: str
    progress: float
    error: str
    pages: int | None
    chunks: int
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def of(document: Document) -> "DocumentOut":
        latest = selectors.latest_version(document)
        assert latest is not None
        return DocumentOut(
            id=document.pk,
            collection=document.collection.slug,
            title=document.title,
            filename=latest.filename,
            content_type=latest.content_type,
            sha256=latest.sha256,
            version=latest.number,
            live_version=document.live_version.number if document.live_version else None,
            status=selectors.status_of(latest.stage),
            stage=latest.stage,
            progress=round(latest.progress, 3),
            error=latest.error,
            pages=latest.pages,
            chunks=latest.chunk_count,
            created_at=document.created_at,
            updated_at=max(document.updated_at, latest.updated_at),
        )


@router.post("/collections/{slug}/documents", response={202: list[UploadOut]})
def documents_upload(
    request: HttpRequest, slug: str, file: File[list[UploadedFile]]
) -> Status[list[UploadOut]]:
    principal = principal_of(request)
    collection, _ = selectors.collection_access(
        principal, slug, role=Role.EDITOR, action="document.upload"
    )
    results = services.documents_upload(collection=collection, actor=principal, files=file)
    return Status(202, [UploadOut.of(result) for result in results])


class DocumentPage(Schema):
    items: list[DocumentOut]
    count: int
    next_cursor: str | None


@router.get("/collections/{slug}/documents", response=DocumentPage)
def documents_list(
    request: HttpRequest,
    slug: str,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> DocumentPage:
    """The collection's documents by path, `limit` at a time after `cursor`."""
    principal = principal_of(request)
    collection, _ = selectors.collection_access(
        principal, slug, role=Role.READER, action="document.list"
    )
    documents = selectors.documents_read(principal, collection)
    items, next_cursor = page(documents, order=("path", "pk"), limit=limit, cursor=cursor)
    return DocumentPage(
        items=[DocumentOut.of(d) for d in items], count=documents.count(), next_cursor=next_cursor
    )


@router.get("/documents/{document_id}", response=DocumentOut)
def document_detail(request: HttpRequest, document_id: DocumentId) -> DocumentOut:
    return DocumentOut.of(selectors.document_read(principal_of(request), document_id))


ANY_FILE = {
    "responses": {
        "200": {
            "description": "The file, in its own content type",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


@router.get("/documents/{document_id}/content", openapi_extra=ANY_FILE)
def document_content(request: HttpRequest, document_id: DocumentId) -> FileResponse:
    """The original file, as uploaded (the live version's, else the newest)."""
    _, version = selectors.document_file(principal_of(request), document_id)
    return FileResponse(
        storage.path_for(version.sha256).open("rb"),
        as_attachment=True,
        filename=version.filename,
        content_type=version.content_type,
    )


@router.post("/documents/{document_id}/reingest", response={202: DocumentOut})
def document_reingest(request: HttpRequest, document_id: DocumentId) -> Status[DocumentOut]:
    """Processes the current file again as a new version; the old one serves until then."""
    principal = principal_of(request)
    document = selectors.document_access(
        principal, document_id, role=Role.EDITOR, action="document.reingest"
    )
    services.document_reingest(document=document, actor=principal)
    return Status(202, DocumentOut.of(document))


@router.delete("/documents/{document_id}", response={204: None})
def document_remove(request: HttpRequest, document_id: DocumentId) -> Status[None]:
    principal = principal_of(request)
    document = selectors.document_access(
        principal, document_id, role=Role.EDITOR, action="document.delete"
    )
    services.document_delete(document=document, actor=principal)
    return Status(204, None)


class ChunkTextOut(Schema):
    id: int
    index: int
    text: str
    page: int | None
    section: str
    url: str


class ChunkOut(Schema):
    passage: ChunkTextOut
    neighbours: list[ChunkTextOut]  # up to two either side, in order, the passage included
    document: DocumentOut


def _passage(chunk: Chunk, request: HttpRequest) -> ChunkTextOut:
    return ChunkTextOut(
        id=chunk.pk,
        index=chunk.index,
        text=chunk.text,
        page=chunk.page,
        section=chunk.section,
        url=request.build_absolute_uri(reverse("passage", args=[chunk.pk])),
    )


@router.get("/chunks/{chunk_id}", response=ChunkOut, tags=["retrieval"])
def chunk_detail(request: HttpRequest, chunk_id: ChunkId) -> ChunkOut:
    """A passage, with its neighbours and its document (readers), recorded as read."""
    document, chunk, around = selectors.passage_read(principal_of(request), chunk_id, context=2)
    return ChunkOut(
        passage=_passage(chunk, request),
        neighbours=[_passage(c, request) for c in around],
        document=DocumentOut.of(document),
    )
