"""Answers made before a view: a reader's 403 page that says why, and the REST API's 415."""

import json
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from kb.api_errors import error_response
from kb.selectors import ReadOnlyAccess


class ReadOnlyAccessMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, ReadOnlyAccess):
            return render(request, "403.html", {"reason": str(exception)}, status=403)
        return None


class ApiInputMiddleware:
    """Input the REST and OpenAI-compatible APIs refuse before any view: a body in a
    type they do not read (415, naming the types they do; ninja would read any body as
    JSON), and a NUL character in the query string or a JSON body (400; PostgreSQL
    refuses NUL in text, so it would fail deep inside a lookup)."""

    READ = ("application/json", "multipart/form-data")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        openai = request.path.startswith("/v1/")
        if not (openai or request.path.startswith("/api/v1/")):
            return self.get_response(request)
        content_type = request.content_type or ""
        json_body = content_type == "application/json" or content_type.endswith("+json")
        has_body = request.headers.get("Content-Length", "0") not in ("", "0")
        if (
            has_body
            and request.method in ("POST", "PUT", "PATCH")
            and not (json_body or content_type in self.READ)
        ):
            return _refused(
                openai,
                415,
                f"The body's type is {content_type or 'not given'}: send JSON "
                "(application/json), or files as multipart/form-data.",
            )
        query = request.META.get("QUERY_STRING", "").lower()
        if "%00" in query or (json_body and has_body and _holds_nul(request)):
            return _refused(openai, 400, "The request holds a NUL character, which kb refuses.")
        return self.get_response(request)


def _holds_nul(request: HttpRequest) -> bool:
    try:
        body = request.body
    except RequestDataTooBig:
        return False  # the view answers that one (413)
    return b"\x00" in body or b"\\u0000" in body


def _refused(openai: bool, status: int, message: str) -> HttpResponse:
    if not openai:
        return error_response(status, message)
    # OpenAI's error shape, which its clients read (retrieval.openai_api.OpenAIError).
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    return HttpResponse(json.dumps(body), status=status, content_type="application/json")
