"""The REST API root (/api/v1): authentication, errors as JSON, and each app's routes."""

from django.core.exceptions import ValidationError
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


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": error.messages}, status=422)
