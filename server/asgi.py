"""ASGI entry point. In the embedded default the serving process also owns the
background worker (and the vector engine): a lifespan wrapper starts and stops them,
since Django's ASGI handler does not answer lifespan messages itself."""

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

django_application = get_asgi_application()


class Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.runtime: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        from server import runtime

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    # Off the event loop: Celery's Django hook refuses to run inside it.
                    self.runtime = await asyncio.to_thread(runtime.runtime_start)
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    await asyncio.to_thread(self.runtime.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Lifespan(django_application)
