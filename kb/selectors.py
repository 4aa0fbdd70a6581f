"""Reads that decide access. Every path that shows content asks these, and only these."""

from django.db.models import Q
from django.http import Http404

from kb.models import ApiToken, Collection, Membership, Role
from kb.principal import Principal


class ReadOnlyAccess(PermissionError):
    """The principal may read the collection but not do this to it."""


def readable_collections(principal: Principal) -> list[tuple[Collection, Role]]:
    """The collections the principal may read, each with the best role it holds there,
    capped by its token. One query: this runs before every search and answer."""
    user = principal.user
    if not user.is_active:
        return []
    token = principal.token
    held: dict[int, tuple[Collection, int]] = {}  # collection id -> (it, best role)
    if principal.is_admin:
        collections = Collection.objects.order_by("pk")
        if token is not None:
            collections = collections.filter(tokens=token)
        held = {c.pk: (c, Role.OWNER) for c in collections}
    else:
        memberships = Membership.objects.filter(Q(user=user) | Q(group__user=user))
        if token is not None:
            memberships = memberships.filter(collection__tokens=token)
        for membership in memberships.select_related("collection").order_by("collection_id"):
            best = held.get(membership.collection_id, (None, 0))[1]
            held[membership.collection_id] = (membership.collection, max(membership.role, best))
    cap = Role.OWNER if token is None else token.role_cap
    return [(collection, Role(min(role, cap))) for collection, role in held.values()]


def collection_roles(principal: Principal) -> dict[int, Role]:
    """Collection id -> the best role the principal holds there, capped by its token."""
    return {collection.pk: role for collection, role in readable_collections(principal)}


def readable_collection_ids(principal: Principal) -> set[int]:
    return set(collection_roles(principal))


def collection_get(
    principal: Principal, slug: str, *, role: Role = Role.READER
) -> tuple[Collection, Role]:
    """The collection and the role held there, if that role is at least `role`.

    Missing and unreadable both raise Http404, so existence is never revealed;
    readable but below `role` raises ReadOnlyAccess.
    """
    held = None
    collection = Collection.objects.filter(slug=slug).first()
    if collection is not None:
        held = collection_roles(principal).get(collection.pk)
    if collection is None or held is None:
        raise Http404("No such collection.")
    if held < role:
        raise ReadOnlyAccess(f"You need the {role.label} role in {slug} to do this.")
    return collection, held


def token_list(*, user_name: str | None = None) -> list[ApiToken]:
    tokens = ApiToken.objects.select_related("user").prefetch_related("collections")
    if user_name:
        tokens = tokens.filter(user__username=user_name)
    return list(tokens)
