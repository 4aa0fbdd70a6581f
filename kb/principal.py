"""The one type every access decision takes: a user, optionally acting through a token."""

from dataclasses import dataclass

from django.contrib.auth.models import User

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
