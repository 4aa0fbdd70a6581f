"""The REST API's one error shape: a stable `code` a program can test, a `message` a
person can act on, and, when a field did not validate, the `field`.

    {"code": "invalid", "message": "query: String should have at least 1 character",
     "field": "query"}
"""

import json
from typing import Any

from django.http import HttpResponse

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}
# Codes that say more than their status does (a 429 for a spent budget or a busy model,
# not a rate).
MORE_CODES = ("budget_exceeded", "busy")


def error_body(status: int, message: str, *, field: str = "", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": CODES.get(status, "error"), "message": message}
    if field:
        body["field"] = field
    return {**body, **extra}


def error_response(status: int, message: str, *, field: str = "", **extra: Any) -> HttpResponse:
    return HttpResponse(
        json.dumps(error_body(status, message, field=field, **extra)),
        status=status,
        content_type="application/json",
    )
