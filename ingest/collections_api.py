"""REST: /api/v1/collections and their members (mounted by server.api).

Readers see the collections they may read, with their role and what each holds;
administrators create collections and set their retention and legal hold; owners
change the rest, delete and share them. A collection is deleted with every document,
passage and vector in it, as a document is."""

from typing import Literal

from django.contrib.auth.models import Group, User
from django.http import Http404, HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from ingest import selectors, services
from kb import services as kb_services
from kb.api_auth import principal_of
from kb.models import Collection, Membership, Role, TokenScope
from kb.pagination import Cursor, Limit, page
from kb.principal import Principal
from kb.selectors import collection_roles

router = Router(tags=["collections"])
ROLES = {role.label: role for role in Role}
RoleName = Literal["reader", "editor", "owner"]


class CollectionOut(Schema):
    slug: str
    name: str
    description: str
    role: str
    sensitive: bool
    text_retention_days: int | None
    legal_hold: bool
    documents: int
    passages: int


class CollectionPage(Schema):
    items: list[CollectionOut]
    next_cursor: str | None


class CollectionIn(Schema):
    slug: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=10_000)


class CollectionChange(Schema):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    system_prompt: str | None = Field(None, max_length=10_000)
    refusal_message: str | None = Field(None, max_length=2_000)
    sensitive: bool | None = None
    # Administrators only (kb.retention); null: back to KB_TEXT_RETENTION_DAYS.
    text_retention_days: int | None = Field(None, ge=0, le=36500)
    legal_hold: bool | None = None


class MemberOut(Schema):
    kind: Literal["user", "group"]
    name: str
    role: str


class MemberPage(Schema):
    items: list[MemberOut]
    next_cursor: str | None


class MemberIn(Schema):
    role: RoleName


def _out(collections: list[Collection], roles: dict[int, Role]) -> list[CollectionOut]:
    counts = selectors.collection_counts([c.pk for c in collections])
    return [
        CollectionOut(
            slug=c.slug,
            name=c.name,
            description=c.description,
            role=roles[c.pk].label,
            sensitive=c.sensitive,
            text_retention_days=c.text_retention_days,
            legal_hold=c.legal_hold,
            documents=counts.get(c.pk, (0, 0))[0],
            passages=counts.get(c.pk, (0, 0))[1],
        )
        for c in collections
    ]


def _owned(principal: Principal, slug: str, action: str) -> Collection:
    collection, _ = selectors.collection_access(principal, slug, role=Role.OWNER, action=action)
    return collection


@router.get("/collections", response=CollectionPage)
def collections_list(
    request: HttpRequest, limit: Limit = 50, cursor: Cursor = None
) -> CollectionPage:
    """The collections the caller may read, by slug, with the caller's role in each."""
    roles = collection_roles(principal_of(request))
    readable = Collection.objects.filter(pk__in=roles)
    items, next_cursor = page(readable, order=("slug", "pk"), limit=limit, cursor=cursor)
    return CollectionPage(items=_out(items, roles), next_cursor=next_cursor)


@router.post("/collections", response={201: CollectionOut})
def collection_add(request: HttpRequest, body: CollectionIn) -> Status[CollectionOut]:
    """Administrators only (by session, or a read-write token)."""
    principal = principal_of(request)
    if not principal.is_admin or (
        principal.token and principal.token.scope != TokenScope.READ_WRITE
    ):
        raise HttpError(403, "Only an administrator may create collections.")
    collection, created = kb_services.collection_create(
        slug=body.slug, name=body.name, description=body.description, actor=principal
    )
    if not created:
        raise HttpError(409, f"A collection named {body.slug} already exists.")
    roles = collection_roles(principal)
    return Status(201, _out([collection], roles)[0])


@router.get("/collections/{slug}", response=CollectionOut)
def collection_detail(request: HttpRequest, slug: str) -> CollectionOut:
    principal = principal_of(request)
    collection, role = selectors.collection_access(
        principal, slug, role=Role.READER, action="collection.read"
    )
    return _out([collection], {collection.pk: role})[0]


@router.patch("/collections/{slug}", response=CollectionOut)
def collection_change(request: HttpRequest, slug: str, body: CollectionChange) -> CollectionOut:
    principal = principal_of(request)
    collection = _owned(principal, slug, "collection.update")
    changes = body.dict(exclude_none=True)
    if "text_retention_days" in body.model_fields_set:
        changes["text_retention_days"] = body.text_retention_days
    if set(changes) & set(kb_services.RETENTION_SETTINGS) and not principal.is_admin:
        raise HttpError(
            403, "Only an administrator may change a collection's retention or legal hold."
        )
    if changes:
        kb_services.collection_update(collection=collection, actor=principal, **changes)
    return _out([collection], {collection.pk: Role.OWNER})[0]


@router.delete("/collections/{slug}", response={204: None})
def collection_remove(request: HttpRequest, slug: str) -> Status[None]:
    principal = principal_of(request)
    try:
        services.collection_delete(
            collection=_owned(principal, slug, "collection.delete"), actor=principal
        )
    except kb_services.CollectionOnHold as held:
        raise HttpError(409, str(held)) from None
    return Status(204, None)


@router.get("/collections/{slug}/members", response=MemberPage)
def members_list(
    request: HttpRequest, slug: str, limit: Limit = 50, cursor: Cursor = None
) -> MemberPage:
    collection = _owned(principal_of(request), slug, "member.list")
    members = Membership.objects.filter(collection=collection).select_related("user", "group")
    items, next_cursor = page(members, order=("pk",), limit=limit, cursor=cursor)
    return MemberPage(items=[_member(m) for m in items], next_cursor=next_cursor)


def _member(membership: Membership) -> MemberOut:
    role = Role(membership.role).label
    if membership.user is not None:
        return MemberOut(kind="user", name=membership.user.username, role=role)
    assert membership.group is not None
    return MemberOut(kind="group", name=membership.group.name, role=role)


def _who(kind: str, name: str) -> tuple[User | None, Group | None]:
    """(user, group): the one named, the other None."""
    if kind == "user" and (user := User.objects.filter(username=name, is_active=True).first()):
        return user, None
    if kind == "group" and (group := Group.objects.filter(name=name).first()):
        return None, group
    raise Http404(f"No such {kind}.")


@router.put("/collections/{slug}/members/{kind}/{name}", response=MemberOut)
def member_put(
    request: HttpRequest, slug: str, kind: Literal["user", "group"], name: str, body: MemberIn
) -> MemberOut:
    """Gives the user or group this role in the collection (owners)."""
    principal = principal_of(request)
    collection = _owned(principal, slug, "member.add")
    user, group = _who(kind, name)
    membership, _ = kb_services.member_add(
        collection=collection, role=ROLES[body.role], actor=principal, user=user, group=group
    )
    return _member(membership)


@router.delete("/collections/{slug}/members/{kind}/{name}", response={204: None})
def member_delete(
    request: HttpRequest, slug: str, kind: Literal["user", "group"], name: str
) -> Status[None]:
    principal = principal_of(request)
    collection = _owned(principal, slug, "member.remove")
    user, group = _who(kind, name)
    if not kb_services.member_remove(
        collection=collection, actor=principal, user=user, group=group
    ):
        raise Http404(f"{name} is not a member of {slug}.")
    return Status(204, None)
