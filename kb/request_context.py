"""Who is asking from where: client IP, user agent and request id for the audit trail."""

import contextlib
import contextvars
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
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


def request_id_from(given: str) -> str:
    """The client's X-Request-ID when it is a sane one, else a new id."""
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def request_info(headers: Mapping[str, str], remote_addr: str) -> RequestInfo:
    """Who is asking, from a request's headers (either case) and its peer's address."""
    client_ip = remote_addr
    if settings.KB_TRUST_X_FORWARDED_FOR and (forwarded := headers.get("X-Forwarded-For")):
        client_ip = forwarded.split(",")[0].strip()
    return RequestInfo(
        client_ip=client_ip[:45],
        user_agent=headers.get("User-Agent", "")[:300],
        request_id=request_id_from(headers.get("X-Request-ID", "")),
    )


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        info = request_info(request.headers, str(request.META.get("REMOTE_ADDR", "")))
        with using(info):
            response = self.get_response(request)
        response["X-Request-ID"] = info.request_id
        return response
