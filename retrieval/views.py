"""Pages: the passage a citation points to, and the original file behind it."""

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from ingest import storage
from ingest.models import Chunk
from ingest.selectors import document_get
from kb.audit import audit_record
from kb.principal import Principal

CONTEXT_PASSAGES = 2


@login_required
def passage(request: HttpRequest, chunk_id: int) -> HttpResponse:
    principal = Principal(user=request.user)  # type: ignore[arg-type]
    chunk = get_object_or_404(Chunk.objects.only("document_id"), pk=chunk_id)
    document = document_get(principal, chunk.document_id)
    chunk = Chunk.objects.get(pk=chunk_id)
    around = Chunk.objects.filter(
        version_id=chunk.version_id,
        index__gte=chunk.index - CONTEXT_PASSAGES,
        index__lte=chunk.index + CONTEXT_PASSAGES,
    ).order_by("index")
    audit_record(
        action="passage.read",
        actor=principal,
        collections=[document.collection.slug],
        chunk_ids=[chunk.pk],
    )
    return render(
        request,
        "retrieval/passage.html",
        {"document": document, "chunk": chunk, "around": around},
    )


@login_required
def document_download(request: HttpRequest, document_id: int) -> FileResponse:
    principal = Principal(user=request.user)  # type: ignore[arg-type]
    document = document_get(principal, document_id)
    version = document.live_version or document.versions.order_by("-number").first()
    if version is None:
        from django.http import Http404

        raise Http404("No file.")
    audit_record(
        action="document.download",
        actor=principal,
        collections=[document.collection.slug],
        detail={"document_id": document.pk, "version": version.number},
    )
    return FileResponse(
        storage.path_for(version.sha256).open("rb"),
        as_attachment=True,
        filename=version.filename,
        content_type=version.content_type,
    )
