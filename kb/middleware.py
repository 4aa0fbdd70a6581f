"""Answers made before a view: a reader's 403 page that says why, and the REST API's 415."""

from collections.abc import Callable

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


class ApiMediaTypeMiddleware:
    """A body sent to the REST API in a type it does not read gets 415 saying which it
    reads, rather than a parse error (ninja would read any body as JSON)."""

    READ = ("application/json", "multipart/form-data")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.path.startswith("/api/v1/")
            and request.method in ("POST", "PUT", "PATCH")
            and request.headers.get("Content-Length", "0") not in ("", "0")
            and request.content_type not in self.READ
            and not (request.content_type or "").endswith("+json")
        ):
            return error_response(
                415,
                f"The body's type is {request.content_type or 'not given'}: send JSON "
                "(application/json), or files as multipart/form-data.",
            )
        return self.get_response(request)
