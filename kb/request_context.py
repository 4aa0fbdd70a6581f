"""Who is asking from where: client IP, user agent and request id for the audit trail."""

import contextlib
import contextvars
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse


@dataclass(frozen=True)
class RequestInfo:
    client_ip: str = ""
    user_agent: str = ""
    request_id: str = ""


_current: contextvars.ContextVar[RequestInfo] = contextvars.ContextVar(
    "kb_request_info",
    default=RequestInfo(),  # noqa: B039 (frozen, so safely shared)
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def current() -> RequestInfo:
    return _current.get()


@contextlib.contextmanager
def using(info: RequestInfo) -> Iterator[RequestInfo]:
    """`info` is the current request's inside the block (a command, a worker thread)."""
    token = _current.set(info)
    try:
        yield info
    finally:
        _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Each log record carries the current request's id, the one its audit row holds."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current().request_id or "-"
        return True


def _client_ip(request: HttpRequest) -> str:
    if settings.KB_TRUST_X_FORWARDED_FOR and (forwarded := request.headers.get("X-Forwarded-For")):
        return forwarded.split(",")[0].strip()[:45]
    return str(request.META.get("REMOTE_ADDR", ""))[:45]


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        info = RequestInfo(
            client_ip=_client_ip(request),
            user_agent=request.headers.get("User-Agent", "")[:300],
            request_id=request_id,
        )
        with using(info):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
