"""Single sign-on with OpenID Connect (README "Single sign-on").

The authorization code flow with PKCE is mozilla-django-oidc's: its views keep the state,
the nonce and the PKCE verifier in the session, and its backend exchanges the code, finds
the provider's signing key and checks the ID token's signature and nonce. kb adds:

- the provider's endpoints, read from its discovery document under OIDC_ISSUER (and only
  there) on first use, instead of one setting each;
- the ID token's issuer, audience, expiry and issue time checked too (the library leaves
  the audience unchecked);
- users matched on the provider's (issuer, subject), created on their first login, their
  groups synced at each login (kb.services.sso_login);
- every login and refused login audited, with the reason;
- password login limited to the break-glass administrator when KB_PASSWORD_LOGIN is off.
"""

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from kb import services
from kb.audit import anonymous, audit_record
from kb.models import Outcome
from kb.principal import session_principal
from kb.services import LoginRefused

logger = logging.getLogger(__name__)

METADATA_SECONDS = 3600  # the discovery document is fetched again after an hour
CLOCK_SKEW_SECONDS = 30  # between the provider's clock and ours, for exp and iat
UNREACHABLE = "The identity provider cannot be reached. Try again in a moment."
MISCONFIGURED = "Single sign-on is not set up correctly. Tell an administrator."
BAD_TOKEN = "The identity provider's answer could not be verified. Try again."  # noqa: S105
PROVIDER_REASONS = {"provider_unreachable", "provider_misconfigured", "provider_refused"}

_metadata: dict[str, tuple[float, dict[str, Any]]] = {}
_metadata_lock = threading.Lock()


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def provider_metadata() -> dict[str, Any]:
    """The provider's discovery document, from the configured issuer only, kept an hour.
    Raises LoginRefused when it cannot be read or does not describe that issuer."""
    issuer = settings.OIDC_ISSUER
    with _metadata_lock:
        cached = _metadata.get(issuer)
    if cached and time.monotonic() - cached[0] < METADATA_SECONDS:
        return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as error:
        raise LoginRefused("provider_unreachable", UNREACHABLE, cause=f"{url}: {error}") from None
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        named = document.get("issuer") if isinstance(document, dict) else None
        cause = f"{url} names the issuer {named!r}, not OIDC_ISSUER {issuer!r}"
        raise LoginRefused("provider_misconfigured", MISCONFIGURED, cause=cause)
    needed = ("authorization_endpoint", "token_endpoint", "jwks_uri")
    if missing := [name for name in needed if not isinstance(document.get(name), str)]:
        cause = f"{url} lacks {', '.join(missing)}"
        raise LoginRefused("provider_misconfigured", MISCONFIGURED, cause=cause)
    with _metadata_lock:
        _metadata[issuer] = (time.monotonic(), document)
    return document


@dataclass(frozen=True)
class Identity:
    subject: str
    username: str
    email: str
    groups: list[str]


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """Who the provider says logged in, by the claims OIDC_*_CLAIM name; refuses a
    missing or unusable claim, and an e-mail domain outside OIDC_ALLOWED_DOMAINS."""
    username = _text_claim(claims, settings.OIDC_USERNAME_CLAIM, required=True)
    domains = settings.OIDC_ALLOWED_DOMAINS
    email = _text_claim(claims, settings.OIDC_EMAIL_CLAIM, required=bool(domains), name=username)
    if domains:
        domain = email.rpartition("@")[2].lower()
        if domain not in domains:
            raise LoginRefused(
                "domain_not_allowed",
                f"Accounts of {domain} may not log in to kb.",
                cause=f"{email} is not in OIDC_ALLOWED_DOMAINS",
                name=username,
            )
        if claims.get("email_verified") in (False, "false"):
            raise LoginRefused(
                "email_not_verified",
                "Your e-mail address is not verified at the identity provider.",
                cause=email,
                name=username,
            )
    return Identity(str(claims["sub"]), username, email, _groups(claims, username))


def _text_claim(claims: dict[str, Any], claim: str, *, required: bool, name: str = "") -> str:
    value = claims.get(claim)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value is None and not required:
        return ""
    raise LoginRefused(
        "missing_claim",
        f"The identity provider did not send the {claim!r} claim kb needs. Tell an administrator.",
        cause=f"{claim}: {value!r}",
        name=name,
    )


def _groups(claims: dict[str, Any], username: str) -> list[str]:
    claim = settings.OIDC_GROUPS_CLAIM
    value = claims.get(claim)
    if value is None and claim in (claims.get("_claim_names") or {}):
        # Too many groups for the token: the provider points elsewhere for them.
        raise LoginRefused(
            "groups_overage",
            "The identity provider sent too many groups. Tell an administrator.",
            cause=f"{claim} is a distributed claim: filter the groups the provider sends",
            name=username,
        )
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise LoginRefused(
            "bad_claim",
            "The identity provider sent groups kb cannot read. Tell an administrator.",
            cause=f"{claim}: {value!r}"[:300],
            name=username,
        )
    return sorted({item.strip() for item in values if item.strip()})


def password_login_allowed(username: str | None) -> bool:
    if settings.KB_PASSWORD_LOGIN:
        return True
    return bool(settings.KB_BREAK_GLASS_USER) and username == settings.KB_BREAK_GLASS_USER


class PasswordBackend(ModelBackend):
    """Django's password check, for those KB_PASSWORD_LOGIN lets in: everyone, or only
    the break-glass administrator. Every password login goes through here, the admin's
    included."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        name = username if username is not None else kwargs.get(User.USERNAME_FIELD)
        if not password_login_allowed(name):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class OidcBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library reads each endpoint from a setting here; kb reads them from the
        # discovery document when a login needs them (below), so loading a session never
        # waits on the provider. Django makes a backend for every request of a session.
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = User

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return str(provider_metadata()["token_endpoint"])

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return str(provider_metadata()["jwks_uri"])

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str | None:
        return provider_metadata().get("userinfo_endpoint")

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        # Only the callback's call, with the nonce and PKCE verifier of its session: a
        # password form's request must never start a token exchange with a code in its URL.
        if request is None or not sso_enabled() or set(kwargs) != {"nonce", "code_verifier"}:
            return None
        try:
            user: User | None = super().authenticate(request, **kwargs)
        except requests.HTTPError as error:
            message = "The identity provider refused to complete the sign-in. Try again."
            raise LoginRefused("provider_refused", message, cause=str(error)[:500]) from None
        except requests.RequestException as error:
            raise LoginRefused("provider_unreachable", UNREACHABLE, cause=str(error)) from None
        except SuspiciousOperation as error:  # the nonce, or no key of the provider's
            raise LoginRefused("bad_token", BAD_TOKEN, cause=str(error)) from None
        return user

    def get_payload_data(self, token: str | bytes, key: Any) -> dict[str, Any]:
        """The ID token's claims, once its signature, algorithm, issuer, audience, expiry
        and issue time hold (the library's own check leaves out the audience)."""
        client_id = self.OIDC_RP_CLIENT_ID
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=client_id,
                issuer=settings.OIDC_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise LoginRefused("token_expired", BAD_TOKEN, cause="the ID token expired") from None
        except jwt.InvalidAudienceError:
            audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
            cause = f"the ID token is for {audience!r}, not OIDC_CLIENT_ID {client_id!r}"
            raise LoginRefused("wrong_audience", BAD_TOKEN, cause=cause) from None
        except jwt.InvalidTokenError as error:
            raise LoginRefused("bad_token", BAD_TOKEN, cause=f"ID token: {error}") from None
        if payload.get("azp", client_id) != client_id:
            cause = f"the ID token was issued to {payload['azp']!r}, not {client_id!r}"
            raise LoginRefused("wrong_audience", BAD_TOKEN, cause=cause)
        return payload

    def get_userinfo(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The ID token's claims, with the userinfo endpoint's over them when there is one
        (providers put groups in either)."""
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            info = super().get_userinfo(access_token, id_token, payload)
            if not isinstance(info, dict) or info.get("sub") != payload["sub"]:
                cause = "the userinfo answer is about another subject than the ID token"
                raise LoginRefused("bad_token", BAD_TOKEN, cause=cause)
            claims.update(info)
        return claims

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> User:
        identity = identity_from_claims(self.get_userinfo(access_token, id_token, payload))
        user, _ = services.sso_login(
            issuer=settings.OIDC_ISSUER,
            subject=identity.subject,
            username=identity.username,
            email=identity.email,
            groups=identity.groups,
        )
        return user

    def get_user(self, user_id: int) -> AbstractBaseUser | None:
        # Django's own, which lets no disabled user back in (the library's does).
        return ModelBackend.get_user(self, user_id)


def login_page(request: HttpRequest, *, refusal: str = "", status: int = 200) -> HttpResponse:
    context = {"form": AuthenticationForm(request), "refusal": refusal, "next": ""}
    return render(request, "kb/login.html", context | sso_context(), status=status)


def sso_context() -> dict[str, bool]:
    return {"sso": sso_enabled(), "password_login": settings.KB_PASSWORD_LOGIN}


def refuse(request: HttpRequest, refused: LoginRefused) -> HttpResponse:
    """The login page saying why, and the refusal's audit row."""
    logger.warning("single sign-on refused (%s): %s", refused.reason, refused.cause)
    audit_record(
        action="auth.login_refused",
        actor=anonymous(refused.name),
        outcome=Outcome.DENIED,
        detail={"method": "sso", "reason": refused.reason, "cause": refused.cause},
    )
    status = 502 if refused.reason in PROVIDER_REASONS else 403
    return login_page(request, refusal=refused.message, status=status)


class AuthenticateView(OIDCAuthenticationRequestView):  # type: ignore[misc]
    """Sends the browser to the provider, with state, nonce and the PKCE challenge."""

    def __init__(self, **kwargs: Any) -> None:
        View.__init__(self, **kwargs)  # the library's reads the endpoint from a setting
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_metadata()["authorization_endpoint"]
        except LoginRefused as refused:
            return refuse(request, refused)
        response: HttpResponse = super().get(request)
        return response


class CallbackView(OIDCAuthenticationCallbackView):  # type: ignore[misc]
    """Where the provider sends the browser back: the library's, with every outcome
    audited and a refusal explained on the login page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404
        try:
            response: HttpResponse = super().get(request)
        except LoginRefused as refused:
            return refuse(request, refused)
        except SuspiciousOperation as error:  # a state this session did not start
            return refuse(request, _stale(str(error)))
        return response

    def login_failure(self) -> HttpResponse:
        if error := self.request.GET.get("error"):
            description = self.request.GET.get("error_description", "")
            refused = LoginRefused(
                "provider_error",
                "The identity provider did not sign you in. Try again.",
                cause=f"{error}: {description}"[:500],
            )
        elif (user := getattr(self, "user", None)) is not None and not user.is_active:
            refused = LoginRefused(
                "account_disabled", "Your kb account is disabled.", name=user.username
            )
        else:
            refused = _stale("no sign-in under way in this session")
        return refuse(self.request, refused)

    def login_success(self) -> HttpResponse:
        response: HttpResponse = super().login_success()
        audit_record(
            action="auth.login",
            actor=session_principal(self.request),
            detail={"method": "sso", "issuer": settings.OIDC_ISSUER},
        )
        return response


def _stale(cause: str) -> LoginRefused:
    message = "This sign-in was not started here, or was already used. Start again."
    return LoginRefused("bad_state", message, cause=cause)


def provider_logout_url(request: HttpRequest) -> str:
    """Where logging out sends the browser (OIDC_OP_LOGOUT_URL_METHOD): after a single
    sign-on login, the provider's end_session_endpoint when it has one, to end its session
    too (RP-initiated logout), and back to kb's login page from there."""
    back = resolve_url(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not (sso_enabled() and id_token):
        return back
    try:
        endpoint = provider_metadata().get("end_session_endpoint")
    except LoginRefused:
        endpoint = None  # the provider is down: kb's own session still ends
    if not isinstance(endpoint, str) or not endpoint:
        return back
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": request.build_absolute_uri(back),
            "client_id": settings.OIDC_RP_CLIENT_ID,
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
