"""The REST API root (/api/v1): authentication, errors in one JSON shape
(kb.api_errors), and each app's routes."""

import logging
import math
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError, Throttled
from ninja.errors import ValidationError as RequestInvalid

from ingest.api import router as documents
from ingest.collections_api import router as collections
from kb.api_auth import BearerTokenAuth, SessionPrincipalAuth
from kb.api_errors import CODES, MORE_CODES, error_response
from kb.audit_api import router as audit
from kb.rate_limits import TokenRate, UserRate
from kb.selectors import ReadOnlyAccess
from kb.tokens_api import router as tokens
from retrieval.api import router as retrieval
from retrieval.conversations_api import router as conversations
from retrieval.openai_api import OpenAIError
from retrieval.openai_api import router as openai_compatible
from retrieval.usage_api import router as usage

logger = logging.getLogger(__name__)
# What each status means in every operation's documented answers (kb.api_errors).
DOCUMENTED_ERRORS = {
    "400": "The request is malformed (its JSON, or a cursor)",
    "401": "No valid token or session",
    "403": "The role or the token allows reading only, or not this",
    "404": "Missing, or not readable by the caller: the two are not told apart",
    "409": "It exists already",
    "413": "The body is too large",
    "422": "A field is not valid: `field` names it",
    "429": "Over a rate limit, a token budget is spent (`budget_exceeded`), or too many "
    "questions wait for the model (`busy`, with the passages): `Retry-After` says when to "
    "try again",
    "503": "The answering model is unreachable",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "enum": sorted({*CODES.values(), *MORE_CODES})},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
}


class Api(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """ninja's schema, with the one error shape on every operation."""
        schema = super().get_openapi_schema(**kwargs)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path in schema["paths"].values():
            for operation in path.values():
                for status, description in DOCUMENTED_ERRORS.items():
                    operation["responses"].setdefault(
                        status, {"description": description, "content": error}
                    )
        return schema


api = Api(
    title="kb",
    version="1",
    description="kb's REST API: collections, documents, search and cited answers, "
    "tokens and the audit trail. Authenticate with `Authorization: Bearer <token>`.",
    urls_namespace="api",
    auth=[BearerTokenAuth(), SessionPrincipalAuth()],
    throttle=[TokenRate(), UserRate()],
)
api.add_router("/", collections)
api.add_router("/", documents)
api.add_router("/", retrieval)
api.add_router("/", conversations)
api.add_router("/", tokens)
api.add_router("/", audit)
api.add_router("/", usage)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    if isinstance(error, Throttled):
        wait = f" Try again in {math.ceil(error.wait)} s." if error.wait else ""
        return error_response(429, f"Too many requests: over this token's or user's rate.{wait}")
    return error_response(error.status_code, str(error))


@api.exception_handler(RequestInvalid)
def _request_invalid(request: HttpRequest, error: RequestInvalid) -> HttpResponse:
    problems = [(_field(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in error.errors]
    field, message = problems[0] if problems else ("", "the request is not valid")
    return error_response(
        422,
        f"{field}: {message}" if field else message,
        field=field,
        errors=[{"field": f, "message": m} for f, m in problems],
    )


def _field(location: Sequence[Any]) -> str:
    """("body", "body", "filters", "top_k") -> "filters.top_k": where the caller put it,
    without ninja's source and parameter names."""
    parts = [str(part) for part in location]
    if parts[:2] == ["body", "body"]:
        parts = parts[2:]
    elif parts and parts[0] in ("body", "query", "path", "form", "file"):
        parts = parts[1:]
    return ".".join(parts)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return error_response(404, str(error) or "Not found.")


@api.exception_handler(ReadOnlyAccess)
def _forbidden(request: HttpRequest, error: ReadOnlyAccess) -> HttpResponse:
    return error_response(403, str(error))


@api.exception_handler(RequestDataTooBig)
def _too_large(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1_000_000 or 1
    return error_response(
        413, f"The request body is too large (over {limit} MB). Send files as uploads."
    )


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return error_response(422, " ".join(error.messages))


@api.exception_handler(Exception)
def _internal(request: HttpRequest, error: Exception) -> HttpResponse:
    # A bug: the log has it; the caller gets the shape, not the internals.
    logger.exception("%s %s failed", request.method, request.path)
    return error_response(500, "Something went wrong on the server; it has been logged.")


# The OpenAI-compatible endpoints (/v1): the same authentication and limits, and errors
# in OpenAI's shape, which its clients read.
OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "server_error",
}
openai_api = NinjaAPI(
    title="kb, OpenAI-compatible",
    version="1",
    urls_namespace="openai",
    auth=[BearerTokenAuth(), SessionPrincipalAuth()],
    throttle=[TokenRate(), UserRate()],
    docs_url=None,
)
openai_api.add_router("/", openai_compatible)


def _openai(status: int, message: str, *, param: str = "") -> HttpResponse:
    return OpenAIError(
        status, message, kind=OPENAI_TYPES.get(status, "invalid_request_error"), param=param
    ).response()


@openai_api.exception_handler(OpenAIError)
def _openai_error(request: HttpRequest, error: OpenAIError) -> HttpResponse:
    return error.response()


@openai_api.exception_handler(HttpError)
def _openai_http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    return _openai(error.status_code, str(error))


@openai_api.exception_handler(RequestInvalid)
def _openai_invalid(request: HttpRequest, error: RequestInvalid) -> HttpResponse:
    first = error.errors[0] if error.errors else {}
    field = _field(first.get("loc", ()))
    return _openai(400, f"{field}: {first.get('msg', 'invalid')}", param=field)


@openai_api.exception_handler(Http404)
def _openai_not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return _openai(404, str(error) or "Not found.")


@openai_api.exception_handler(RequestDataTooBig)
def _openai_too_large(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    return _openai(413, "The request body is too large.")


@openai_api.exception_handler(Exception)
def _openai_internal(request: HttpRequest, error: Exception) -> HttpResponse:
    logger.exception("%s %s failed", request.method, request.path)
    return _openai(500, "Something went wrong on the server; it has been logged.")
