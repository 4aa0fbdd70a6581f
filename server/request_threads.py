"""Django's ASGI handler, with each request's thread kept for a later request.

Django runs a request's synchronous code (middleware, views, the ORM) in a thread of its
own: a new thread for every request, with a new database connection, both dropped at its
end. That cost about 1.5 ms of the server's CPU a request on the embedded default, a
fifth of a bare authenticated call (bench/README.md, "Search latency"). asgiref's
ThreadSensitiveContext takes an executor that outlives the context: here a request's
thread waits, idle, for a later request, and its database connection with it
(DATABASE_CONN_MAX_AGE). Each request still has one thread to itself while it runs.

The middleware run synchronously, with the view, in one call to that thread. Django's
own handler builds an async chain: with synchronous middleware it goes to the thread for
the middleware, back to the event loop for the URL and then to the thread again for the
view, each a hand-over the event loop must wait its turn for under load (bench/README.md,
"Search latency"). An async view (a streamed answer) is awaited from the thread, as
Django's WSGI handler does.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase

# Idle threads kept for later requests; a busier moment's extra threads end with it.
KEPT_THREADS = 32


class ThreadKeepingASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []
        self._threads: set[ThreadPoolExecutor] = set()  # idle or not

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # refused, as Django does
            return
        try:
            executor = self._idle.pop()
        except IndexError:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-request")
            self._threads.add(executor)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # Queued behind whatever the request left running there (a view still at
            # work after its client left), so a thread is idle when it is handed on.
            executor.submit(self._release, executor)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await sync_to_async(self.get_response)(request)
        return response

    def close(self) -> None:
        """End every thread once its work is done, each closing its database connection
        (at shutdown)."""
        for executor in list(self._threads):
            executor.submit(connections.close_all)
            executor.shutdown()
        self._idle.clear()
        self._threads.clear()

    def _release(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < KEPT_THREADS:
            self._idle.append(executor)
        else:
            self._threads.discard(executor)
            connections.close_all()  # this thread's own
            executor.shutdown(wait=False)
