"""The web process keeps its request threads, and their database connections, between
requests (server.request_threads), and never hands on a thread that is still at work."""

import asyncio
import threading
from typing import Any

import pytest
from django.core.signals import request_finished, request_started
from django.db import connections

from kb.audit import SYSTEM
from kb.models import TokenScope
from kb.services import token_create
from server.request_threads import ThreadKeepingASGIHandler

pytestmark = pytest.mark.usefixtures("audit_head")  # transactional: other threads see the rows


async def get(app: ThreadKeepingASGIHandler, path: str, secret: str, query: bytes = b"") -> int:
    """A request as uvicorn makes it; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": query,
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {secret}".encode())],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 5000),
    }
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    incoming.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, incoming.get, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.fixture
def app():
    handler = ThreadKeepingASGIHandler()
    yield handler
    handler.close()


@pytest.fixture
def secret(alice, hr) -> str:
    return token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)[1]


@pytest.fixture
def seen():
    """Each finished request's thread and database connection, from the request's thread."""
    finished: list[tuple[threading.Thread, Any]] = []

    def record(**kwargs: Any) -> None:
        finished.append((threading.current_thread(), connections["default"].connection))

    request_finished.connect(record)
    yield finished
    request_finished.disconnect(record)


def test_requests_one_after_another_reuse_threads_and_their_connections(
    app, secret, seen, monkeypatch
):
    # What the embedded default's SQLite has by default (DATABASE_CONN_MAX_AGE).
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 600)

    async def in_turn() -> list[int]:
        return [await get(app, "/api/v1/tokens", secret) for _ in range(6)]

    assert asyncio.run(in_turn()) == [200] * 6
    # A thread is handed on once it is idle again, just after its request: the next
    # request may find it not yet back and take another, so two take turns.
    assert len({thread for thread, _ in seen}) <= 2, "requests ran in new threads"
    assert len({connection for _, connection in seen}) <= 2, "new connections"


def test_a_thread_still_at_work_after_its_client_left_is_not_handed_on(app, secret, seen):
    entered, release, held = threading.Event(), threading.Event(), []

    def hold(scope: dict[str, Any], **kwargs: Any) -> None:
        if scope["query_string"] == b"hold":
            held.append(threading.current_thread())
            entered.set()
            release.wait(30)

    request_started.connect(hold)

    async def scenario() -> list[int]:
        task = asyncio.create_task(get(app, "/api/v1/tokens", secret, b"hold"))
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()  # the client left; its request's thread is still in `hold`
        with pytest.raises(asyncio.CancelledError):
            await task
        # Served at once, in another thread: not queued behind the held one.
        statuses = [await asyncio.wait_for(get(app, "/api/v1/tokens", secret), 10)]
        release.set()
        await asyncio.sleep(0.1)  # the held thread finishes and becomes idle
        statuses.append(await get(app, "/api/v1/tokens", secret))
        return statuses

    try:
        assert asyncio.run(scenario()) == [200, 200]
    finally:
        release.set()
        request_started.disconnect(hold)
    (second, _), (third, _) = seen
    assert second is not held[0]
    assert third in (held[0], second), "a finished request's thread was not kept"
