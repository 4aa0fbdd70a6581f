"""REST: POST /api/v1/search and POST /api/v1/ask (JSON, or text/event-stream)."""

import json
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from ninja import Field, Router, Schema

from kb.api_auth import principal_of
from kb.api_errors import error_body, error_response
from kb.ids import ID_MAX
from retrieval import services, usage
from retrieval.citations import Citation
from retrieval.llm import LlmUnavailable
from retrieval.search import Passage
from retrieval.streaming import event_stream, sse

logger = logging.getLogger(__name__)
router = Router(tags=["retrieval"])
P = ParamSpec("P")
R = TypeVar("R")


class Filters(Schema):
    document_ids: list[Annotated[int, Field(ge=1, le=ID_MAX)]] | None = None
    content_types: list[str] | None = None
    updated_after: datetime | None = None


class SearchIn(Schema):
    query: str = Field(..., min_length=1, max_length=2000)
    collections: list[str] | None = None
    top_k: int = Field(10, ge=1, le=100)
    filters: Filters = Filters()
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"


class PassageOut(Schema):
    chunk_id: int
    document_id: int
    document_title: str
    collection: str
    text: str
    score: float
    page: int | None
    section: str
    url: str


def passage_dict(passage: Passage, site: str) -> dict[str, Any]:
    """A passage as PassageOut describes it; `site` is the server's address."""
    return {
        "chunk_id": passage.chunk_id,
        "document_id": passage.document_id,
        "document_title": passage.document_title,
        "collection": passage.collection,
        "text": passage.text,
        "score": round(passage.score, 5),
        "page": passage.page,
        "section": passage.section,
        "url": site + passage.url,
    }


def _site(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


class SearchOut(Schema):
    query_id: str
    results: list[PassageOut]


def _json(payload: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


# Sync: under ASGI Django gives each request a thread of its own, so searches run side by
# side, with one hop fewer than an async view. The answer is plain JSON that SearchOut
# documents: validating it again cost more than the rest of the view (measured).
@router.post("/search", response=SearchOut)
def search(request: HttpRequest, body: SearchIn) -> HttpResponse:
    query_id, result = services.search_run(
        principal=principal_of(request),
        query=body.query,
        collections=body.collections,
        top_k=body.top_k,
        document_ids=body.filters.document_ids,
        content_types=body.filters.content_types,
        updated_after=body.filters.updated_after,
        mode=body.mode,
    )
    site = _site(request)
    return _json(
        {"query_id": query_id, "results": [passage_dict(p, site) for p in result.passages]}
    )


class Turn(Schema):
    role: Literal["user", "assistant"]
    content: str = Field(..., max_length=20000)


class AskIn(Schema):
    question: str = Field(..., min_length=1)
    collections: list[str] | None = None
    history: list[Turn] = Field(default_factory=list, max_length=50)
    stream: bool = False
    # The API keeps no conversations: private only marks the audit row (and keeps its
    # texts out when KB_PRIVATE_AUDIT_TEXTS is off).
    private: bool = False


def _citation(citation: Citation, request: HttpRequest) -> dict[str, Any]:
    return {**citation.as_dict(), "url": request.build_absolute_uri(citation.passage.url)}


def _unavailable(answer: services.Answer, request: HttpRequest, error: str) -> HttpResponse:
    # The reason names internal endpoints: it goes to the log and the audit row only.
    logger.warning("question %s: %s", answer.query_id, error)
    return error_response(
        503,
        "The answering model is unavailable. Here are the passages.",
        query_id=answer.query_id,
        passages=_passages(answer, request),
    )


def budget_response(spent: usage.BudgetExceeded) -> HttpResponse:
    """429 saying which budget is spent and when it resets, with Retry-After."""
    response = error_response(429, spent.message, code="budget_exceeded", **spent.detail())
    response["Retry-After"] = str(spent.retry_after())
    return response


def busy_response(busy: services.ModelBusy, request: HttpRequest) -> HttpResponse:
    """429 saying how many questions are ahead, with Retry-After and the passages."""
    site = _site(request)
    response = error_response(
        429,
        str(busy),
        code="busy",
        query_id=busy.query_id,
        ahead=busy.ahead,
        retry_after=busy.retry_after,
        passages=[passage_dict(p, site) for p in busy.passages[:5]],
    )
    response["Retry-After"] = str(busy.retry_after)
    return response


def _passages(answer: services.Answer, request: HttpRequest) -> list[dict[str, Any]]:
    site = _site(request)
    return [passage_dict(p, site) for p in answer.passages[:5]]


# Async, so that a streamed answer's events go out as the model writes them; the blocking
# work runs on a thread pool.
def off_loop(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    return sync_to_async(function, thread_sensitive=False)


@router.post("/ask")
async def ask(request: HttpRequest, body: AskIn) -> HttpResponseBase:
    try:
        answer = await off_loop(services.question_answer)(
            principal=principal_of(request),
            question=body.question,
            collections=body.collections,
            history=[turn.dict() for turn in body.history],
            private=body.private,
        )
    except services.QuestionTooLong as error:
        return error_response(422, str(error), field="question")
    except usage.BudgetExceeded as spent:
        return budget_response(spent)
    except services.ModelBusy as busy:
        return busy_response(busy, request)
    if answer.unavailable:
        return _unavailable(answer, request, answer.unavailable)
    if body.stream:
        return _event_stream(answer.events(), request)
    try:
        checked = await off_loop(answer.complete)()
    except LlmUnavailable as error:
        return _unavailable(answer, request, str(error))
    citations = [_citation(c, request) for c in checked.citations]
    return _json(
        {**answer.summary(), "citations": citations, "passages": _passages(answer, request)}
    )


def _event_stream(events: Iterator[tuple[str, Any]], request: HttpRequest) -> StreamingHttpResponse:
    def encoded() -> Generator[bytes, None, None]:
        try:
            for name, data in events:
                if name == "citations":
                    data = [_citation(c, request) for c in data]
                yield sse(name, data)
        except LlmUnavailable as error:
            logger.warning("streamed answer failed: %s", error)
            yield sse("error", error_body(503, "The answering model stopped answering."))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    return event_stream(encoded())
