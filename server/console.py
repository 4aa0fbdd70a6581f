"""Pages for administrators: the audit trail (filter, open, export, check the chain) and
system status. Anyone else gets 404, as for anything they may not see."""

from collections.abc import Callable
from datetime import datetime, time
from functools import wraps
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone

from ingest.models import Chunk
from ingest.selectors import document_status_counts
from kb.audit import audit_filter, audit_record, audit_verify, export_csv, export_jsonl
from kb.models import AuditEvent, Outcome
from kb.principal import session_principal
from retrieval.models import Feedback
from server import status

PAGE_SIZE = 50


def admin_only(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(view)
    @login_required
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not session_principal(request).is_admin:
            raise Http404
        return view(request, *args, **kwargs)

    return checked


class AuditFilterForm(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="inclusive"
    )
    user = forms.CharField(required=False, max_length=150)
    collection = forms.SlugField(required=False, max_length=63)
    action = forms.CharField(required=False, max_length=64)
    outcome = forms.ChoiceField(choices=[("", "any"), *Outcome.choices], required=False)

    def events(self) -> Any:
        data = self.cleaned_data if self.is_valid() else {}

        def day(value: Any, end: bool = False) -> datetime | None:
            if not value:
                return None
            moment = datetime.combine(value, time.max if end else time.min)
            return timezone.make_aware(moment)

        return audit_filter(
            since=day(data.get("since")),
            until=day(data.get("until"), end=True),
            user=data.get("user") or None,
            collection=data.get("collection") or None,
            action=data.get("action") or None,
            outcome=data.get("outcome") or None,
        )


@admin_only
def audit(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    events = form.events().order_by("-seq")
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    verified = audit_verify() if request.GET.get("verify") else None
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("verify", None)
    return render(
        request,
        "kb/audit.html",
        {"form": form, "page": page, "verified": verified, "query": query.urlencode()},
    )


@admin_only
def audit_event(request: HttpRequest, seq: int) -> HttpResponse:
    event = AuditEvent.objects.filter(seq=seq).first()
    if event is None:
        raise Http404
    chunks = Chunk.objects.in_bulk(event.chunk_ids) if event.chunk_ids else {}
    passages = [(pk, chunks.get(pk), pk in event.cited_chunk_ids) for pk in event.chunk_ids]
    query_id = event.detail.get("query_id") if isinstance(event.detail, dict) else None
    feedback = Feedback.objects.filter(exchange__query_id=query_id).first() if query_id else None
    return render(
        request,
        "kb/audit_event.html",
        {"event": event, "passages": passages, "feedback": feedback},
    )


@admin_only
def audit_download(request: HttpRequest) -> StreamingHttpResponse:
    form = AuditFilterForm(request.GET or None)
    jsonl = request.GET.get("format") == "jsonl"
    audit_record(
        action="audit.export",
        actor=session_principal(request),
        detail={"format": "jsonl" if jsonl else "csv", "filters": request.GET.dict()},
    )
    events = form.events().iterator()
    response = StreamingHttpResponse(
        export_jsonl(events) if jsonl else export_csv(events),
        content_type="application/x-ndjson" if jsonl else "text/csv",
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    extension = "jsonl" if jsonl else "csv"
    response["Content-Disposition"] = f'attachment; filename="kb-audit-{stamp}.{extension}"'
    return response


@admin_only
def system_status(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "kb/status.html",
        {
            "checks": status.system_checks(),
            "queues": status.queue_depths(),
            "documents": document_status_counts(),
        },
    )
