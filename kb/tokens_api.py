"""REST: /api/v1/tokens, the caller's own API tokens (mounted by server.api).

A token is made within the caller's rights: for collections the caller may read now,
no wider than the token it is made with (its collections, its scope, its expiry). The
secret is in the answer to POST, once; kb keeps only its hash."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from kb import services
from kb.api_auth import principal_of
from kb.models import ApiToken, Collection, Role, TokenScope
from kb.pagination import Cursor, Limit, page
from kb.selectors import readable_collection_ids

router = Router(tags=["tokens"])


class TokenOut(Schema):
    id: str  # the token's public prefix
    name: str
    scope: str
    collections: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool

    @staticmethod
    def of(token: ApiToken) -> "TokenOut":
        return TokenOut(
            id=token.prefix,
            name=token.name,
            scope=token.scope,
            collections=sorted(c.slug for c in token.collections.all()),
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked=token.revoked_at is not None,
        )


class TokenCreated(TokenOut):
    secret: str  # shown once


class TokenPage(Schema):
    items: list[TokenOut]
    next_cursor: str | None


class TokenIn(Schema):
    name: str = Field("", max_length=100)
    scope: TokenScope = TokenScope.READ
    collections: list[str] = Field(..., min_length=1, max_length=500)
    expires_at: datetime | None = None


@router.get("/tokens", response=TokenPage)
def tokens_list(
    request: HttpRequest,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TokenPage:
    """The caller's own tokens, newest first, revoked ones included."""
    tokens = ApiToken.objects.filter(user=principal_of(request).user).prefetch_related(
        "collections"
    )
    items, next_cursor = page(tokens, order=("-created_at", "-pk"), limit=limit, cursor=cursor)
    return TokenPage(items=[TokenOut.of(t) for t in items], next_cursor=next_cursor)


@router.post("/tokens", response={201: TokenCreated})
def token_add(request: HttpRequest, body: TokenIn) -> Status[TokenCreated]:
    principal = principal_of(request)
    _within_parent(principal.token, body)
    readable = readable_collection_ids(principal)
    collections = list(Collection.objects.filter(slug__in=body.collections, pk__in=readable))
    if missing := sorted(set(body.collections) - {c.slug for c in collections}):
        raise Http404(f"No such collection: {', '.join(missing)}.")
    token, secret = services.token_create(
        user=principal.user,
        collections=collections,
        scope=body.scope,
        name=body.name,
        expires_at=body.expires_at,
        actor=principal,
    )
    return Status(201, TokenCreated(**TokenOut.of(token).dict(), secret=secret))


def _within_parent(parent: ApiToken | None, body: TokenIn) -> None:
    """A token made with a token is no wider than it: scope and expiry."""
    if parent is None:
        return
    if body.scope == TokenScope.READ_WRITE and parent.role_cap < Role.EDITOR:
        raise HttpError(403, "A read-only token cannot make a read-write one.")
    ends = parent.expires_at
    if ends is not None and (body.expires_at is None or body.expires_at > ends):
        raise ValidationError("A token made with a token cannot outlive it: set expires_at.")


@router.delete("/tokens/{token_id}", response={204: None})
def token_remove(request: HttpRequest, token_id: str) -> Status[None]:
    """Revokes one of the caller's tokens at once (the one in use, too)."""
    principal = principal_of(request)
    token = ApiToken.objects.filter(user=principal.user, prefix=token_id[:16]).first()
    if token is None:
        raise Http404("No such token.")
    services.token_revoke(token=token, actor=principal)
    return Status(204, None)
