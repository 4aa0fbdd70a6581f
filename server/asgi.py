"""ASGI entry point. In the embedded default the serving process also owns the
background worker (and the vector engine): a lifespan wrapper starts and stops them,
since Django's ASGI handler does not answer lifespan messages itself."""

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import django

from server.access_log import AccessLog
from server.request_threads import ThreadKeepingASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# As django.core.asgi.get_asgi_application, with request threads kept between requests.
django.setup(set_prefix=False)

django_application = ThreadKeepingASGIHandler()


class Lifespan:
    """Django for every path but /mcp, which the MCP server answers (its sessions run
    for as long as the server does)."""

    def __init__(self, app: Any) -> None:
        from retrieval.mcp_server import http_app

        self.app = app
        self.mcp, self._mcp_inner = http_app()
        self.runtime: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            path = scope.get("path", "")
            app = self.mcp if path == "/mcp" or path.startswith("/mcp/") else self.app
            await app(scope, receive, send)
            return
        from server import runtime

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # Off the event loop: Celery's Django hook refuses to run inside it.
                    self.runtime = await asyncio.to_thread(runtime.runtime_start)
                    inner = self._mcp_inner
                    await self._stack.enter_async_context(inner.router.lifespan_context(inner))
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stack.aclose()
                await asyncio.to_thread(self.app.close)
                if self.runtime is not None:
                    await asyncio.to_thread(self.runtime.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return


application = AccessLog(Lifespan(django_application))
