"""How REST callers prove who they are: a bearer token, or the browser's session."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from kb.audit import anonymous, audit_record
from kb.models import Outcome
from kb.principal import Principal
from kb.services import token_authenticate


def token_principal(token: str) -> Principal | None:
    """The principal of a live token, None for any other string."""
    found = token_authenticate(token, touch_seconds=settings.KB_TOKEN_TOUCH_SECONDS)
    return None if found is None else Principal(user=found.user, token=found)


def token_refused(path: str) -> None:
    audit_record(
        action="auth.token_failed",
        actor=anonymous(),
        outcome=Outcome.DENIED,
        detail={"path": path},
    )


class BearerTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        principal = token_principal(token)
        if principal is None:
            token_refused(request.path)
            # Answered here: falling through to the session's check would answer a
            # token's failure with the session's CSRF error.
            raise HttpError(401, "The API token is expired, revoked or invalid.")
        return principal


class SessionPrincipalAuth(SessionAuth):
    """The logged-in user (CSRF-checked, as for any form post)."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal | None:
        user: Any = request.user
        if user.is_authenticated and user.is_active:
            return Principal(user=user)
        return None


def principal_of(request: HttpRequest) -> Principal:
    principal: Principal = request.auth  # type: ignore[attr-defined]
    return principal
