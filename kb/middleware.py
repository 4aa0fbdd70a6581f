"""A reader who tries an editor's or owner's action gets a 403 page that says why."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

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
