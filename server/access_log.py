"""One access line per HTTP request, with the request id its audit rows hold.

In place of the ASGI server's own line (off in `serve` and in compose), for every path,
Django's and /mcp's alike: the request id is settled here, before either sees the
request, as the client's sane X-Request-ID or a new one written into the request's
headers, so Django's middleware and the MCP tools read the same id and the response
carries it back. The query string is left out: it can hold a question, which belongs in
the audit trail and not in a log.
"""

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kb.request_context import RequestInfo, request_id_from, using

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

logger = logging.getLogger("kb.access")
_HEADER = b"x-request-id"


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: Any, send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != _HEADER]
        given = next((v for k, v in scope["headers"] if k == _HEADER), b"")
        request_id = request_id_from(given.decode("latin-1"))
        scope = {**scope, "headers": [*headers, (_HEADER, request_id.encode())]}
        status = 500  # what the server answers for an app that fails before its response
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = message.get("headers", [])
                if not any(k.lower() == _HEADER for k, _ in sent):
                    message = {
                        **message,
                        "headers": [*sent, (b"X-Request-ID", request_id.encode())],
                    }
            await send(message)

        with using(RequestInfo(request_id=request_id)):
            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                client = (scope.get("client") or ("-",))[0]
                milliseconds = (time.perf_counter() - started) * 1000
                logger.info(
                    '%s "%s %s" %d %.1f ms',
                    client,
                    scope["method"],
                    scope["path"],
                    status,
                    milliseconds,
                    extra={
                        "client": client,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(milliseconds, 1),
                    },
                )
