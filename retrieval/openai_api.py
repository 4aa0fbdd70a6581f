"""OpenAI-compatible endpoints over collections (mounted on /v1 by server.api): what an
integrator's `openai` client already speaks.

- GET /v1/models: `kb` (every readable collection) and `kb:<slug>` for each one.
- POST /v1/chat/completions, streamed or not: answered by the same service as
  /api/v1/ask (retrieval, refusal, routing, citations, audit). The answer keeps its [n]
  markers; each citation is also a `url_citation` annotation on the message, and kb's
  own citations go in `kb_citations` inside the choice (the last chunk's, streamed).
  Too many questions waiting for the model: OpenAI's 429 (`rate_limit_exceeded`, with
  Retry-After), the passages in the error's `kb_passages`.
- GET /v1/vector_stores and POST /v1/vector_stores/{slug}/search: OpenAI's vector-store
  search shape, answered by kb's hybrid search in the caller's scope.
"""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from ninja import Field, Router, Schema
from ninja.errors import HttpError

from ingest.selectors import collection_counts
from kb.api_auth import principal_of
from kb.ids import ID_MAX
from kb.models import Collection
from kb.selectors import readable_collections
from retrieval import services, usage
from retrieval.citations import Citation
from retrieval.llm import LlmUnavailable
from retrieval.search import Passage
from retrieval.streaming import async_stream

router = Router(tags=["openai"])
MODEL = "kb"


class OpenAIError(HttpError):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str,
        param: str = "",
        code: str = "",
        retry_after: int | None = None,
        **extra: Any,
    ):
        super().__init__(status, message)
        self.kind, self.param, self.code = kind, param or None, code or None
        self.retry_after = retry_after
        self.extra = extra  # kb's own fields, after OpenAI's

    def body(self) -> dict[str, Any]:
        fields = {"message": self.message, "type": self.kind, "param": self.param}
        return {"error": {**fields, "code": self.code, **self.extra}}

    def response(self) -> HttpResponse:
        response = _json(self.body(), status=self.status_code)
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def _json(payload: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


@router.get("/models")
def models_list(request: HttpRequest) -> HttpResponse:
    readable = readable_collections(principal_of(request))
    created = int(min((c.created_at for c, _ in readable), default=datetime.now(UTC)).timestamp())
    models = [{"id": MODEL, "object": "model", "created": created, "owned_by": "kb"}]
    models += [
        {
            "id": f"{MODEL}:{c.slug}",
            "object": "model",
            "created": int(c.created_at.timestamp()),
            "owned_by": "kb",
        }
        for c, _ in readable
    ]
    return _json({"object": "list", "data": models})


def _model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "kb"}


def _collections(model: str) -> list[str] | None:
    """The collections a model name stands for: None for all readable ones."""
    if model == MODEL:
        return None
    if model.startswith(f"{MODEL}:") and len(model) > len(MODEL) + 1:
        return [model[len(MODEL) + 1 :]]
    raise _no_model(model)


def _no_model(model: str) -> "OpenAIError":
    """Unknown and unreadable alike, as everywhere: existence is not revealed."""
    return OpenAIError(
        404,
        f"The model {model!r} does not exist: use {MODEL!r} or '{MODEL}:<collection>' "
        "(GET /v1/models lists them).",
        kind="invalid_request_error",
        param="model",
        code="model_not_found",
    )


class Message(Schema):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(Schema):
    include_usage: bool = False


class ChatIn(Schema):
    """OpenAI's request; parameters kb has no use for (temperature, ...) are ignored."""

    model: str = Field(..., min_length=1, max_length=100)
    messages: list[Message] = Field(..., min_length=1, max_length=100)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None


def _refuse_unsupported(body: ChatIn) -> None:
    for param, given in (("tools", body.tools), ("functions", body.functions)):
        if given:
            raise OpenAIError(
                400,
                f"{param} are not supported: kb answers from its documents only.",
                kind="invalid_request_error",
                param=param,
                code="unsupported_parameter",
            )
    if body.n is not None and body.n != 1:
        raise OpenAIError(
            400, "Only one choice (n=1) is supported.", kind="invalid_request_error", param="n"
        )


def _question(messages: list[Message]) -> tuple[str, list[dict[str, str]]]:
    """(the last user message, the conversation before it). The caller's system messages
    are not passed on: kb's own instructions and the collection's prompt govern answers."""
    turns = [
        {"role": m.role, "content": m.text()} for m in messages if m.role in ("user", "assistant")
    ]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise OpenAIError(
            400,
            "The last message must be the user's question.",
            kind="invalid_request_error",
            param="messages",
        )
    return turns[-1]["content"], turns[:-1]


def annotations(text: str, citations: list[Citation], request: HttpRequest) -> list[dict[str, Any]]:
    """A url_citation per citation, at its first [n] marker in `text`."""
    found = []
    for citation in citations:
        marker = f"[{citation.n}]"
        start = text.find(marker)
        if start < 0:
            continue
        found.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": request.build_absolute_uri(citation.passage.url),
                    "title": citation.passage.document_title,
                    "start_index": start,
                    "end_index": start + len(marker),
                },
            }
        )
    return found


def kb_citations(citations: list[Citation], request: HttpRequest) -> list[dict[str, Any]]:
    return [{**c.as_dict(), "url": request.build_absolute_uri(c.passage.url)} for c in citations]


def _usage(answer: services.Answer) -> dict[str, int]:
    used = answer.usage
    return {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "total_tokens": used.prompt_tokens + used.completion_tokens,
    }


def _unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The answering model is unavailable; try again later.",
        kind="server_error",
        code="model_unavailable",
    )


@router.post("/chat/completions")
def chat_completions(request: HttpRequest, body: ChatIn) -> HttpResponseBase:
    _refuse_unsupported(body)
    collections = _collections(body.model)
    question, history = _question(body.messages)
    try:
        answer = services.question_answer(
            principal=principal_of(request),
            question=question,
            collections=collections,
            history=history,
        )
    except services.QuestionTooLong as error:
        raise OpenAIError(400, str(error), kind="invalid_request_error", param="messages") from None
    except Http404:
        raise _no_model(body.model) from None
    except usage.BudgetExceeded as spent:
        # OpenAI's own answer to a spent quota, which its clients know.
        raise OpenAIError(
            429,
            spent.message,
            kind="insufficient_quota",
            code="insufficient_quota",
            retry_after=spent.retry_after(),
        ) from None
    except services.ModelBusy as busy:
        # OpenAI's rate limit, which its clients retry after Retry-After.
        raise OpenAIError(
            429,
            str(busy),
            kind="requests",
            code="rate_limit_exceeded",
            retry_after=busy.retry_after,
            kb_passages=[_result(p) for p in busy.passages[:5]],
        ) from None
    if answer.unavailable:
        raise _unavailable()
    completion_id, created = f"chatcmpl-{answer.query_id}", int(time.time())
    if body.stream:
        with_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _chunks(answer, request, completion_id, created, body.model, usage=with_usage)
        response = StreamingHttpResponse(async_stream(chunks), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        return response
    try:
        checked = answer.complete()
    except LlmUnavailable:
        raise _unavailable() from None
    return _json(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": checked.answer,
                        "refusal": None,
                        "annotations": annotations(checked.answer, checked.citations, request),
                    },
                    "finish_reason": "stop",
                    "kb_citations": kb_citations(checked.citations, request),
                    "kb_refused": answer.refused,
                }
            ],
            "usage": _usage(answer),
        }
    )


def _chunks(
    answer: services.Answer,
    request: HttpRequest,
    completion_id: str,
    created: int,
    model: str,
    *,
    usage: bool,
) -> Iterator[bytes]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    events = answer.events()
    try:
        yield chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
        for name, data in events:
            if name == "queued":
                # A comment, which OpenAI's clients skip: the stream stays alive.
                yield f": {data['ahead']} questions ahead of yours\n\n".encode()
            elif name == "token":
                yield chunk([{"index": 0, "delta": {"content": data}, "finish_reason": None}])
            elif name == "citations":
                final = {
                    "index": 0,
                    "delta": {"annotations": annotations(answer.text, data, request)},
                    "finish_reason": "stop",
                    "kb_citations": kb_citations(data, request),
                    "kb_refused": answer.refused,
                }
                yield chunk([final])
        if usage:
            yield chunk([], usage=_usage(answer))
    except LlmUnavailable:
        error = _unavailable()
        yield f"data: {json.dumps(error.body())}\n\n".encode()
    finally:
        events.close()
    yield b"data: [DONE]\n\n"


# Vector stores: a collection is one.


def _store(collection: Collection, counts: dict[int, tuple[int, int]]) -> dict[str, Any]:
    documents = counts.get(collection.pk, (0, 0))[0]
    return {
        "id": collection.slug,
        "object": "vector_store",
        "name": collection.name,
        "created_at": int(collection.created_at.timestamp()),
        "status": "completed",
        "usage_bytes": 0,
        "file_counts": {
            "in_progress": 0,
            "completed": documents,
            "failed": 0,
            "cancelled": 0,
            "total": documents,
        },
        "metadata": {},
    }


@router.get("/vector_stores")
def vector_stores_list(request: HttpRequest) -> HttpResponse:
    readable = [c for c, _ in readable_collections(principal_of(request))]
    counts = collection_counts([c.pk for c in readable])
    data = [_store(c, counts) for c in readable]
    return _json(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }
    )


class SearchIn(Schema):
    query: str | list[str]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: dict[str, Any] | None = None


def _filters(given: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's attribute filters, as kb's search filters: `document_id` and
    `content_type` with eq or in, `updated_at` (Unix seconds) with gt or gte, alone or
    joined by `and`."""
    found: dict[str, Any] = {}
    if not given:
        return found
    parts = given.get("filters", []) if given.get("type") == "and" else [given]
    for part in parts:
        key, kind, value = part.get("key"), part.get("type"), part.get("value")
        values = value if isinstance(value, list) else [value]
        if key == "document_id" and kind in ("eq", "in"):
            found["document_ids"] = [
                int(str(v)) for v in values if str(v).isdigit() and int(str(v)) <= ID_MAX
            ]
        elif key == "content_type" and kind in ("eq", "in"):
            found["content_types"] = [str(v) for v in values]
        elif key == "updated_at" and kind in ("gt", "gte") and isinstance(value, int | float):
            found["updated_after"] = datetime.fromtimestamp(value, UTC)
        else:
            raise OpenAIError(
                400,
                "Unsupported filter: kb filters on document_id and content_type (eq, in) and "
                "updated_at (gt, gte, Unix seconds), joined by and.",
                kind="invalid_request_error",
                param="filters",
            )
    return found


def _result(passage: Passage) -> dict[str, Any]:
    return {
        "file_id": str(passage.document_id),
        "filename": passage.document_title,
        "score": round(passage.score, 5),
        "attributes": {
            "document_id": passage.document_id,
            "collection": passage.collection,
            "chunk_id": passage.chunk_id,
            "page": passage.page,
            "section": passage.section,
        },
        "content": [{"type": "text", "text": passage.text}],
    }


@router.post("/vector_stores/{slug}/search")
def vector_store_search(request: HttpRequest, slug: str, body: SearchIn) -> HttpResponse:
    query = " ".join(body.query) if isinstance(body.query, list) else body.query
    if not query.strip() or len(query) > 2000:
        raise OpenAIError(
            400,
            "The query must hold 1 to 2,000 characters.",
            kind="invalid_request_error",
            param="query",
        )
    try:
        _, result = services.search_run(
            principal=principal_of(request),
            query=query,
            collections=[slug],
            top_k=body.max_num_results,
            **_filters(body.filters),
        )
    except Http404:
        raise OpenAIError(
            404, f"No vector store {slug!r}.", kind="invalid_request_error", code="not_found"
        ) from None
    return _json(
        {
            "object": "vector_store.search_results.page",
            "search_query": [query],
            "data": [_result(p) for p in result.passages],
            "has_more": False,
            "next_page": None,
        }
    )
