"""Pages: a collection's documents with live progress, upload, re-ingest and delete."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingest import selectors, services
from kb.models import Role
from kb.principal import Principal
from kb.selectors import collection_get

PAGE_SIZE = 50


def _principal(request: HttpRequest) -> Principal:
    return Principal(user=request.user)  # type: ignore[arg-type]


def _documents(request: HttpRequest, slug: str) -> dict[str, Any]:
    collection, role = collection_get(_principal(request), slug)
    documents = selectors.documents_listed(collection)
    page = Paginator(documents, PAGE_SIZE).get_page(request.GET.get("page"))
    return {
        "collection": collection,
        "can_edit": role >= Role.EDITOR,
        "is_owner": role >= Role.OWNER,
        "page": page,
        "active": selectors.collection_busy(collection),
    }


@login_required
def collection(request: HttpRequest, slug: str) -> HttpResponse:
    return render(request, "ingest/collection.html", _documents(request, slug))


@login_required
def documents_table(request: HttpRequest, slug: str) -> HttpResponse:
    """The documents table alone: the page script swaps it in while work is under way."""
    return render(request, "ingest/_documents.html", _documents(request, slug))


@login_required
@require_POST
def upload(request: HttpRequest, slug: str) -> HttpResponse:
    principal = _principal(request)
    collection, _ = collection_get(principal, slug, role=Role.EDITOR)
    results = [
        result
        for upload in request.FILES.getlist("file")
        for result in services.document_upload(
            collection=collection, actor=principal, path=upload.name or "unnamed", stream=upload
        )
    ]
    if request.headers.get("Accept") == "application/json":
        return JsonResponse(
            {
                "results": [
                    {
                        "name": r.path,
                        "id": r.document.pk if r.document else None,
                        "duplicate": r.duplicate,
                        "error": r.error,
                    }
                    for r in results
                ]
            }
        )
    for result in results:
        if result.error:
            messages.error(request, f"{result.path}: {result.error}")
    if not results:
        messages.error(request, "Choose one or more files first.")
    elif accepted := sum(not r.error for r in results):
        messages.success(request, f"{accepted} file(s) received; they are being processed.")
    return redirect("collection", slug)


ACTIONS = {
    "delete": "Delete",
    "reingest": "Re-ingest",
}


@login_required
def document_action(request: HttpRequest, document_id: int, action: str) -> HttpResponse:
    """A confirmation page (GET), then the action (POST)."""
    principal = _principal(request)
    document = selectors.document_get(principal, document_id, role=Role.EDITOR)
    slug = document.collection.slug
    if request.method != "POST":
        return render(
            request,
            "ingest/confirm.html",
            {"document": document, "action": action, "label": ACTIONS[action]},
        )
    if action == "delete":
        services.document_delete(document=document, actor=principal)
        messages.success(request, f"{document.title} was deleted.")
    else:
        services.document_reingest(document=document, actor=principal)
        messages.success(request, f"{document.title} is being processed again.")
    return redirect("collection", slug)
