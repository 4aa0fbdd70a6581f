"""Who is asking from where: client IP, user agent and request id for the audit trail."""

import contextvars
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse

from kb.env import env_bool


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
# Behind a reverse proxy (compose/), the client's address is in X-Forwarded-For.
_TRUST_PROXY = env_bool("KB_TRUST_X_FORWARDED_FOR", False)


def current() -> RequestInfo:
    return _current.get()


def use(info: RequestInfo) -> contextvars.Token[RequestInfo]:
    return _current.set(info)


def _client_ip(request: HttpRequest) -> str:
    if _TRUST_PROXY and (forwarded := request.headers.get("X-Forwarded-For")):
        return forwarded.split(",")[0].strip()[:45]
    return str(request.META.get("REMOTE_ADDR", ""))[:45]


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = _current.set(
            RequestInfo(
                client_ip=_client_ip(request),
                user_agent=request.headers.get("User-Agent", "")[:300],
                request_id=request_id,
            )
        )
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response["X-Request-ID"] = request_id
        return response
