"""The one type every access decision takes: a user, optionally acting through a token."""

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.http import HttpRequest

from kb.models import ApiToken


@dataclass(frozen=True)
class Principal:
    user: User
    token: ApiToken | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.is_superuser and self.user.is_active

    @property
    def actor_type(self) -> str:
        if self.token is not None:
            return "token"
        return "service" if hasattr(self.user, "service_account") else "user"


def session_principal(request: HttpRequest) -> Principal:
    """The logged-in user of a web page (login_required has let them in)."""
    return Principal(user=request.user)  # type: ignore[arg-type]
