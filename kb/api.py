"""The REST API root (/api/v1) and the collection endpoints."""

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema

from kb.api_auth import BearerTokenAuth, SessionPrincipalAuth, principal_of
from kb.models import Collection, Role
from kb.selectors import ReadOnlyAccess, collection_get, readable_collections

api = NinjaAPI(
    title="kb",
    version="1",
    urls_namespace="api",
    auth=[BearerTokenAuth(), SessionPrincipalAuth()],
)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(error) or "Not found."}, status=404)


@api.exception_handler(ReadOnlyAccess)
def _forbidden(request: HttpRequest, error: ReadOnlyAccess) -> HttpResponse:
    return api.create_response(request, {"detail": str(error)}, status=403)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": error.messages}, status=422)


class CollectionOut(Schema):
    slug: str
    name: str
    description: str
    role: str

    @staticmethod
    def of(collection: Collection, role: Role) -> "CollectionOut":
        return CollectionOut(
            slug=collection.slug,
            name=collection.name,
            description=collection.description,
            role=role.label,
        )


@api.get("/collections", response=list[CollectionOut])
def collections_list(request: HttpRequest) -> list[CollectionOut]:
    return [CollectionOut.of(c, role) for c, role in readable_collections(principal_of(request))]


@api.get("/collections/{slug}", response=CollectionOut)
def collection_detail(request: HttpRequest, slug: str) -> CollectionOut:
    return CollectionOut.of(*collection_get(principal_of(request), slug))


def _routers() -> None:
    from ingest.api import router as documents
    from retrieval.api import router as retrieval

    api.add_router("/", documents)
    api.add_router("/", retrieval)


_routers()
