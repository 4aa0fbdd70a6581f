"""Server-sent events served as they are made, for the REST API and the ask page."""

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def event_stream(events: Iterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(async_stream(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def async_stream(events: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Each event as soon as it exists. (Django buffers a synchronous iterator whole under
    ASGI, which would turn a streamed answer into one late block.) A client that leaves
    closes the generator, which writes the cut-off answer's audit row."""
    try:
        while (item := await sync_to_async(_next)(events)) is not None:
            yield item
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            await sync_to_async(close)()


def _next(events: Iterator[bytes]) -> bytes | None:
    return next(events, None)
