"""Rate limits on the REST API, per token and per user: ninja's throttling, kept in
Django's cache (Redis in production, so every web process counts together; this
process's memory in the embedded default, which is one process). Past a limit the
answer is 429 with Retry-After, in kb's error shape.

The rates are read per request (KB_RATE_LIMIT_TOKEN, KB_RATE_LIMIT_USER: "600/min";
empty for none), so that a changed setting holds at once."""

from django.conf import settings
from django.http import HttpRequest
from ninja.throttling import SimpleRateThrottle

from kb.principal import Principal


class _PrincipalRate(SimpleRateThrottle):
    setting = ""

    def __init__(self) -> None:
        super().__init__(rate="1/s")  # replaced by the setting on each request

    def allow_request(self, request: HttpRequest) -> bool:
        self.rate = getattr(settings, self.setting) or None
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request)

    def ident(self, principal: Principal) -> str | None:
        raise NotImplementedError

    def get_cache_key(self, request: HttpRequest) -> str | None:
        principal = getattr(request, "auth", None)
        ident = self.ident(principal) if isinstance(principal, Principal) else None
        return None if ident is None else self.cache_format % {"scope": self.scope, "ident": ident}


class TokenRate(_PrincipalRate):
    """Each token on its own: one busy integration does not starve its owner's others."""

    scope = "token"
    setting = "KB_RATE_LIMIT_TOKEN"

    def ident(self, principal: Principal) -> str | None:
        return principal.token.prefix if principal.token is not None else None


class UserRate(_PrincipalRate):
    """All of a user's calls together, by session and by every token."""

    scope = "user"
    setting = "KB_RATE_LIMIT_USER"

    def ident(self, principal: Principal) -> str | None:
        return str(principal.user.pk)
