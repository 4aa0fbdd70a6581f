"""Pages: the collections list, a collection's documents with live progress, upload,
re-ingest and delete."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingest import selectors, services
from kb.forms import CollectionCreateForm
from kb.models import Role
from kb.principal import session_principal
from kb.selectors import collection_get, readable_collections
from kb.services import collection_create

PAGE_SIZE = 50


def _documents(request: HttpRequest, slug: str) -> dict[str, Any]:
    collection, role = collection_get(session_principal(request), slug)
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
def collections(request: HttpRequest) -> HttpResponse:
    principal = session_principal(request)
    form = CollectionCreateForm(request.POST or None)
    if request.method == "POST":
        if not principal.is_admin:
            raise Http404
        if form.is_valid():
            try:
                collection, created = collection_create(actor=principal, **form.cleaned_data)
            except ValidationError as error:
                form.add_error(None, error)
            else:
                if created:
                    return redirect("collection", collection.slug)
                form.add_error("slug", "A collection with this short name exists already.")
    readable = readable_collections(principal)
    counts = selectors.document_counts([c.pk for c, _ in readable])
    rows = [(c, role, counts.get(c.pk, 0)) for c, role in readable]
    return render(
        request,
        "ingest/collections.html",
        {"rows": rows, "form": form if principal.is_admin else None},
    )


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
    principal = session_principal(request)
    collection, _ = selectors.collection_access(
        principal, slug, role=Role.EDITOR, action="document.upload"
    )
    results = services.documents_upload(
        collection=collection, actor=principal, files=request.FILES.getlist("file")
    )
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
    principal = session_principal(request)
    document = selectors.document_access(
        principal, document_id, role=Role.EDITOR, action=f"document.{action}"
    )
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
