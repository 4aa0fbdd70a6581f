"""The REST API root (/api/v1): authentication, errors as JSON, and each app's routes."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI

from ingest.api import router as documents
from kb.api import router as collections
from kb.api_auth import BearerTokenAuth, SessionPrincipalAuth
from kb.selectors import ReadOnlyAccess
from retrieval.api import router as retrieval

api = NinjaAPI(
    title="kb",
    version="1",
    urls_namespace="api",
    auth=[BearerTokenAuth(), SessionPrincipalAuth()],
)
api.add_router("/", collections)
api.add_router("/", documents)
api.add_router("/", retrieval)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(error) or "Not found."}, status=404)


@api.exception_handler(ReadOnlyAccess)
def _forbidden(request: HttpRequest, error: ReadOnlyAccess) -> HttpResponse:
    return api.create_response(request, {"detail": str(error)}, status=403)


@api.exception_handler(RequestDataTooBig)
def _too_large(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1_000_000 or 1
    return api.create_response(
        request,
        {"detail": f"The request body is too large (over {limit} MB). Send files as uploads."},
        status=413,
    )


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": error.messages}, status=422)
