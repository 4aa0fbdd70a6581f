"""Reads that decide access. Every path that shows content asks these, and only these."""

from django.db.models import Q
from django.http import Http404

from kb.models import ApiToken, Collection, Membership, Role
from kb.principal import Principal


class ReadOnlyAccess(PermissionError):
    """The principal may read the collection but not do this to it."""


def collection_roles(principal: Principal) -> dict[int, Role]:
    """Collection id -> the best role the principal holds there, capped by its token."""
    user = principal.user
    if not user.is_active:
        return {}
    roles: dict[int, Role] = {}
    if principal.is_admin:
        roles = {pk: Role.OWNER for pk in Collection.objects.values_list("pk", flat=True)}
    else:
        memberships = Membership.objects.filter(Q(user=user) | Q(group__user=user))
        for collection_id, role in memberships.values_list("collection_id", "role"):
            roles[collection_id] = Role(max(role, roles.get(collection_id, 0)))
    token = principal.token
    if token is not None:
        allowed = set(token.collections.values_list("pk", flat=True))
        roles = {pk: Role(min(role, token.role_cap)) for pk, role in roles.items() if pk in allowed}
    return roles


def readable_collection_ids(principal: Principal) -> set[int]:
    return set(collection_roles(principal))


def readable_collections(principal: Principal) -> list[tuple[Collection, Role]]:
    """The collections the principal may read, each with the role it holds there."""
    roles = collection_roles(principal)
    return [(c, roles[c.pk]) for c in Collection.objects.filter(pk__in=roles)]


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
