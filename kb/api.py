"""The REST collection endpoints (mounted on /api/v1 by server.api)."""

from django.http import HttpRequest
from ninja import Router, Schema

from kb.api_auth import principal_of
from kb.models import Collection, Role
from kb.selectors import collection_get, readable_collections

router = Router(tags=["collections"])


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


@router.get("/collections", response=list[CollectionOut])
def collections_list(request: HttpRequest) -> list[CollectionOut]:
    return [CollectionOut.of(c, role) for c, role in readable_collections(principal_of(request))]


@router.get("/collections/{slug}", response=CollectionOut)
def collection_detail(request: HttpRequest, slug: str) -> CollectionOut:
    return CollectionOut.of(*collection_get(principal_of(request), slug))
