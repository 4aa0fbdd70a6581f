"""REST: /api/v1/audit, the audit trail for administrators (mounted by server.api).

The same rows and filters as `manage.py audit_export`, streamed as JSON Lines or CSV;
reading the trail is itself recorded."""

from datetime import datetime
from typing import Literal

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router, Schema
from ninja.errors import HttpError

from kb.api_auth import principal_of
from kb.audit import (
    audit_filter,
    audit_record,
    audit_verify,
    export_csv,
    export_jsonl,
    in_batches,
)
from kb.principal import Principal

router = Router(tags=["audit"])
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


def _administrator(request: HttpRequest) -> Principal:
    principal = principal_of(request)
    if not principal.is_admin:
        raise HttpError(403, "Only an administrator may read the audit trail.")
    return principal


STREAMED = {
    "responses": {
        "200": {
            "description": "The rows: one JSON object a line, or CSV with a header row",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    }
}


@router.get("/audit", openapi_extra=STREAMED)
def audit_rows(
    request: HttpRequest,
    format: Literal["jsonl", "csv"] = "jsonl",
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | None = None,
    collection: str | None = None,
    action: str | None = None,
    outcome: Literal["ok", "denied", "refused", "error"] | None = None,
) -> StreamingHttpResponse:
    """Rows in order (`since` inclusive, `until` exclusive), streamed. Through a token,
    only the rows that name one of its collections."""
    principal = _administrator(request)
    token = principal.token
    within = None if token is None else [c.slug for c in token.collections.all()]
    filters = {"user": user, "collection": collection, "action": action, "outcome": outcome}
    audit_record(
        action="audit.export",
        actor=principal,
        detail={
            "format": format,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            **filters,
        },
    )
    events = in_batches(audit_filter(since=since, until=until, within=within, **filters))
    lines = export_csv(events) if format == "csv" else export_jsonl(events)
    response = StreamingHttpResponse(lines, content_type=CONTENT_TYPES[format])
    response["Content-Disposition"] = f'attachment; filename="audit.{format}"'
    return response


class VerifyOut(Schema):
    ok: bool
    checked: int
    message: str


@router.get("/audit/verify", response=VerifyOut)
def audit_check(request: HttpRequest) -> VerifyOut:
    """Walks the chain as `manage.py audit_verify` does."""
    _administrator(request)
    result = audit_verify()
    return VerifyOut(ok=result.ok, checked=result.checked, message=result.message)
