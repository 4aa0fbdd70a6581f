"""Single sign-on against a real OpenID Connect provider: the certified `oidc-provider`
package on Node.js (tests/oidc/provider.mjs), started on loopback by these tests.

kb's side is driven with Django's test client, the provider's login and consent pages
with httpx as the browser would, and the whole flow once in chromium. The provider reads
its accounts (and how to spoil its ID tokens) from a JSON file the tests rewrite between
logins."""

import json
import os
import re
import select
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.test import Client

from kb.audit import SYSTEM
from kb.models import AuditEvent, Membership, Role, SsoIdentity
from kb.selectors import readable_collections
from kb.services import collection_create, user_create
from tests.conftest import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    REQUIRE_SERVICES,
    free_port,
    logged_in,
    manage,
    principal,
)

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
NODE = shutil.which("node")
if not (NODE and (OIDC_DIR / "node_modules" / "oidc-provider").is_dir()) and not REQUIRE_SERVICES:
    pytest.skip(
        "Node.js or tests/oidc/node_modules is missing (make test installs them)",
        allow_module_level=True,
    )

SECRET = "kb-client-secret-of-thirty-two-chars"
PASSWORD = "correct horse battery"
KB = "http://testserver"
ACCOUNTS: dict[str, dict[str, Any]] = {
    "ada": {
        "email": "ada@example.com",
        "email_verified": True,
        "preferred_username": "ada",
        "name": "Ada Lovelace",
        "groups": ["engineering", "hr"],
    },
    "eve": {"email": "eve@elsewhere.org", "email_verified": True, "preferred_username": "eve"},
    "alice": {"email": "alice@example.com", "email_verified": True, "preferred_username": "alice"},
}


@dataclass
class Provider:
    issuer: str
    state: Path
    process: subprocess.Popen[str]

    def accounts(self, id_token: dict[str, Any] | None = None, **changes: Any) -> None:
        """Rewrite the provider's accounts (claims changed per account) and its ID tokens."""
        accounts = {name: {**claims, **changes.get(name, {})} for name, claims in ACCOUNTS.items()}
        state = {
            "accounts": {
                name: {"password": PASSWORD, "claims": claims} for name, claims in accounts.items()
            },
            "id_token": id_token,
        }
        self.state.write_text(json.dumps(state))


def provider_start(folder: Path, kb_url: str) -> Provider:
    """`node tests/oidc/provider.mjs` with a kb client whose redirect URI is on `kb_url`,
    and a second client, other-app, once it says it is ready."""
    port = free_port()
    state = folder / "state.json"
    client = {
        "client_secret": SECRET,
        "redirect_uris": [f"{kb_url}/oidc/callback/"],
        "post_logout_redirect_uris": [f"{kb_url}/login/"],
    }
    clients = [
        {"client_id": "kb", **client},
        {**client, "client_id": "other-app", "client_secret": "other-app-secret-0123456789abcdef"},
    ]
    config = folder / "provider.json"
    config.write_text(json.dumps({"port": port, "clients": clients, "state": str(state)}))
    process = subprocess.Popen(
        [NODE or "node", str(OIDC_DIR / "provider.mjs"), str(config)],
        stdout=subprocess.PIPE,
        stderr=(folder / "provider.log").open("w"),
        text=True,
    )
    provider = Provider(f"http://127.0.0.1:{port}", state, process)
    provider.accounts()
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if line.strip() != f"ready {provider.issuer}":
        process.kill()
        raise RuntimeError(f"the provider did not start: {(folder / 'provider.log').read_text()}")
    return provider


def provider_stop(provider: Provider) -> None:
    provider.process.terminate()
    provider.process.wait(10)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    provider = provider_start(tmp_path_factory.mktemp("oidc"), KB)
    yield provider
    provider_stop(provider)


def sso_settings(settings, provider: Provider) -> None:
    settings.OIDC_ISSUER = provider.issuer
    settings.OIDC_RP_CLIENT_ID = "kb"
    settings.OIDC_RP_CLIENT_SECRET = SECRET
    # The provider gives the groups claim with the groups scope, as many do.
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.OIDC_ALLOWED_DOMAINS = ["example.com"]


@pytest.fixture
def sso(settings, provider: Provider, db: None) -> Provider:
    sso_settings(settings, provider)
    provider.accounts()
    return provider


def provider_pages(browser: httpx.Client, url: str, login: str) -> tuple[str, list[str]]:
    """Follow the provider from its authorization URL, through its sign-in and consent
    forms when it shows them, until it sends the browser back to kb: (kb's callback URL,
    the forms filled in)."""
    forms: list[str] = []
    while not url.startswith(KB):
        response = browser.get(url)
        if response.status_code == 200:
            if 'name="password"' in response.text:
                forms.append("sign-in")
                response = browser.post(url, data={"login": login, "password": PASSWORD})
            else:
                forms.append("consent")
                response = browser.post(url, data={"consent": "yes"})
        assert response.is_redirect, response.text
        url = urljoin(url, response.headers["location"])
        assert len(forms) < 5
    return url, forms


def kb_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def sso_login(client: Client, browser: httpx.Client, login: str, next_url: str = "/") -> Any:
    """Log in to kb through the provider: kb's answer to the provider's redirect back."""
    start = client.get("/oidc/authenticate/", {"next": next_url})
    assert start.status_code == 302, start.content
    callback, _ = provider_pages(browser, start["Location"], login)
    return client.get(kb_path(callback))


def rows(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def kb_groups(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def readable(user: User) -> set[str]:
    return {collection.slug for collection, _ in readable_collections(principal(user))}


def group_reads(slug: str, group: str) -> None:
    collection = collection_create(slug=slug, name=slug, actor=SYSTEM)[0]
    group_row = Group.objects.get_or_create(name=group)[0]
    Membership.objects.create(collection=collection, group=group_row, role=Role.READER)


def test_first_login_creates_the_user_and_its_groups_with_pkce(sso):
    group_reads("eng", "sso:engineering")
    client = Client()
    with httpx.Client() as browser:
        start = client.get("/oidc/authenticate/", {"next": "/collections/"})
        request = parse_qs(urlsplit(start["Location"]).query)
        assert start["Location"].startswith(f"{sso.issuer}/auth?")
        assert request["code_challenge_method"] == ["S256"] and request["code_challenge"]
        assert request["client_id"] == ["kb"] and "nonce" in request
        callback, forms = provider_pages(browser, start["Location"], "ada")
        answer = client.get(kb_path(callback))

    assert forms == ["sign-in", "consent"]
    assert answer.status_code == 302 and answer["Location"] == "/collections/"
    ada = User.objects.get(username="ada")
    assert client.session["_auth_user_id"] == str(ada.pk)
    assert ada.email == "ada@example.com" and not ada.has_usable_password()
    assert SsoIdentity.objects.get(user=ada).subject == "ada"
    assert kb_groups(ada) == {"sso:engineering", "sso:hr"}
    assert readable(ada) == {"eng"}  # the role given to the directory's group
    assert b"eng" in client.get("/collections/").content
    created, synced, login = rows("user.create"), rows("user.groups_sync"), rows("auth.login")
    assert [row.detail["sso"] for row in created] == [sso.issuer]
    assert [row.detail["added"] for row in synced] == [["sso:engineering", "sso:hr"]]
    assert [(row.actor_name, row.detail["method"]) for row in login] == [("ada", "sso")]


def test_the_next_login_syncs_the_groups_that_changed(sso):
    group_reads("eng", "sso:engineering")
    group_reads("hr", "sso:hr")
    group_reads("finance", "sso:finance")
    with httpx.Client() as browser:
        sso_login(Client(), browser, "ada")
        ada = User.objects.get(username="ada")
        assert readable(ada) == {"eng", "hr"}
        # A group kb gave by hand is kb's own: single sign-on never touches it.
        ada.groups.add(Group.objects.create(name="book-club"))

        sso.accounts(ada={"groups": ["engineering", "finance"]})
        answer = sso_login(Client(), browser, "ada")
        assert answer.status_code == 302
        assert kb_groups(ada) == {"sso:engineering", "sso:finance", "book-club"}
        assert readable(ada) == {"eng", "finance"}  # hr went with its group
        changes = [(row.detail["added"], row.detail["removed"]) for row in rows("user.groups_sync")]
        assert changes[1:] == [(["sso:finance"], ["sso:hr"])]
        assert rows("user.groups_sync")[-1].actor_name == "ada"

        # Nothing changed: no row; the provider remembered the session (no forms again).
        start = Client()
        begin = start.get("/oidc/authenticate/")
        callback, forms = provider_pages(browser, begin["Location"], "ada")
        assert forms == [] and start.get(kb_path(callback)).status_code == 302
    assert len(rows("user.groups_sync")) == 2
    assert len(rows("auth.login")) == 3 and User.objects.filter(username="ada").count() == 1


def refused(answer: Any, reason: str) -> AuditEvent:
    """The login page said no, nobody is logged in, and the refusal is audited."""
    assert answer.status_code == 403, answer.content
    assert b'role="alert"' in answer.content
    assert "_auth_user_id" not in answer.wsgi_request.session
    (row,) = rows("auth.login_refused")
    assert (row.outcome, row.detail["method"], row.detail["reason"]) == ("denied", "sso", reason)
    assert AuditEvent.objects.order_by("seq").last() == row  # and no login after it
    return row


def test_a_user_of_a_disallowed_domain_is_refused(sso):
    with httpx.Client() as browser:
        answer = sso_login(Client(), browser, "eve")
    row = refused(answer, "domain_not_allowed")
    assert b"Accounts of elsewhere.org may not log in" in answer.content
    assert row.actor_name == "eve" and "eve@elsewhere.org" in row.detail["cause"]
    assert not User.objects.filter(username="eve").exists()


@pytest.mark.parametrize(
    ("change", "reason", "cause"),
    [
        ({"ada": {"email_verified": False}}, "email_not_verified", "ada@example.com"),
        # Signed with the provider's own key, for other-app: only the audience is wrong.
        ({"id_token": {"audience": "other-app"}}, "wrong_audience", "'other-app'"),
        ({"id_token": {"expired": True}}, "token_expired", "expired"),
    ],
    ids=["unverified-address", "id-token-for-another-client", "expired-id-token"],
)
def test_what_must_not_log_in_is_refused(sso, change, reason, cause):
    sso.accounts(**change)
    with httpx.Client() as browser:
        row = refused(sso_login(Client(), browser, "ada"), reason)
    assert cause in row.detail["cause"]
    assert not User.objects.filter(username="ada").exists()


def test_a_callback_is_used_once(sso):
    client = Client()
    with httpx.Client() as browser:
        start = client.get("/oidc/authenticate/")
        callback, _ = provider_pages(browser, start["Location"], "ada")
    assert client.get(kb_path(callback)).status_code == 302
    client.post("/logout/")
    answer = client.get(kb_path(callback))  # replayed: its state is spent
    assert answer.status_code == 403
    assert rows("auth.login_refused")[-1].detail["reason"] == "bad_state"


def test_a_sign_in_the_provider_ends_with_an_error_is_refused(sso):
    client = Client()
    start = client.get("/oidc/authenticate/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    # What the provider answers when the person cancels or does not consent.
    answer = client.get("/oidc/callback/", {"error": "access_denied", "state": state})
    row = refused(answer, "provider_error")
    assert row.detail["cause"].startswith("access_denied")


def test_a_disabled_user_is_let_in_neither_by_the_session_nor_by_the_provider(sso):
    client = Client()
    with httpx.Client() as browser:
        sso_login(client, browser, "ada")
        assert client.get("/collections/").status_code == 200
        User.objects.filter(username="ada").update(is_active=False)
        assert client.get("/collections/").status_code == 302  # the session is over
        refused(sso_login(Client(), browser, "ada"), "account_disabled")


def test_a_local_account_is_not_taken_over(sso, alice):
    with httpx.Client() as browser:
        row = refused(sso_login(Client(), browser, "alice"), "name_taken")
    assert row.actor_name == "alice"
    assert not SsoIdentity.objects.exists()
    assert Client().login(username="alice", password="alice-pass-123")


def test_a_user_the_directory_provisioned_signs_in_to_that_account(sso):
    from kb.directory import SCIM_ACTOR, UserFields, user_deactivate, user_provision

    group_reads("eng", "sso:engineering")
    ada = user_provision(fields=UserFields(username="ada"), actor=SCIM_ACTOR).user
    client = Client()
    with httpx.Client() as browser:
        sso_login(client, browser, "ada")
    assert client.session["_auth_user_id"] == str(ada.pk)
    assert SsoIdentity.objects.get(user=ada).subject == "ada"
    assert User.objects.filter(username__iexact="ada").count() == 1
    assert [row.detail["via"] for row in rows("user.sso_link")] == ["scim"]
    assert readable(ada) == {"eng"}
    user_deactivate(user=ada, actor=SCIM_ACTOR)
    with httpx.Client() as browser:
        refused(sso_login(Client(), browser, "ada"), "account_disabled")


def test_password_login_off_but_for_the_break_glass_administrator(sso, settings, alice):
    settings.KB_PASSWORD_LOGIN = False
    settings.KB_BREAK_GLASS_USER = "root"
    user_create(username="root", password="root-pass-4821", superuser=True, actor=SYSTEM)

    page = Client().get("/login/")
    assert b"Log in with single sign-on" in page.content and b"Break-glass" in page.content
    for path in ("/login/", "/admin/login/"):
        answer = Client().post(path, {"username": "alice", "password": "alice-pass-123"})
        assert answer.status_code == 403 and b"Password login is off" in answer.content
        assert "_auth_user_id" not in answer.wsgi_request.session
    assert authenticate(username="alice", password="alice-pass-123") is None
    reasons = [(row.actor_name, row.detail["reason"]) for row in rows("auth.login_refused")]
    assert reasons == [("alice", "password_login_off")] * 2

    root = Client()
    answer = root.post("/login/", {"username": "root", "password": "root-pass-4821"})
    assert answer.status_code == 302 and root.get("/audit/").status_code == 200
    # Single sign-on still logs everyone else in.
    with httpx.Client() as browser:
        assert sso_login(Client(), browser, "ada").status_code == 302


def test_logout_ends_the_kb_session_and_the_providers(sso):
    client = Client()
    with httpx.Client() as browser:
        sso_login(client, browser, "ada")
        answer = client.post("/logout/")
        assert answer.status_code == 302
        end = urlsplit(answer["Location"])
        assert f"{end.scheme}://{end.netloc}{end.path}" == f"{sso.issuer}/session/end"
        query = parse_qs(end.query)
        assert query["post_logout_redirect_uri"] == [f"{KB}/login/"] and query["id_token_hint"]
        assert client.get("/").status_code == 302  # kb's session is gone

        # The provider asks to confirm, then sends the browser back to kb's login page.
        confirm = browser.get(answer["Location"])
        action = re.search(r'action="([^"]+)"', confirm.text)
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', confirm.text)
        assert action and xsrf, confirm.text
        done = browser.post(action[1], data={"xsrf": xsrf[1], "logout": "yes"})
        assert done.is_redirect and done.headers["location"] == f"{KB}/login/"

        # ... and its session is over too: the next login asks for the password again.
        begin = Client().get("/oidc/authenticate/")
        _, forms = provider_pages(browser, begin["Location"], "ada")
        assert forms[0] == "sign-in"


def test_a_password_users_logout_stays_in_kb(sso, alice):
    client = logged_in(alice)
    answer = client.post("/logout/")
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_an_unreachable_provider_is_said_and_audited(settings, db):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = "kb", SECRET
    answer = Client().get("/oidc/authenticate/")
    assert answer.status_code == 502 and b"cannot be reached" in answer.content
    (row,) = rows("auth.login_refused")
    assert row.detail["reason"] == "provider_unreachable"


def test_single_sign_on_is_off_without_an_issuer(db, alice):
    assert Client().get("/oidc/authenticate/").status_code == 404
    assert Client().get("/oidc/callback/", {"code": "x", "state": "y"}).status_code == 404
    page = Client().get("/login/")
    assert b"single sign-on" not in page.content and b'name="password"' in page.content
    assert Client().login(username="alice", password="alice-pass-123")


def test_settings_come_from_the_environment(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    base = {**os.environ, "KB_DATA_DIR": str(tmp_path)}
    sso_env = {**base, "OIDC_ISSUER": "https://id.example.com/", "OIDC_CLIENT_ID": "kb"}
    shown = manage(
        {**sso_env, "OIDC_CLIENT_SECRET_FILE": str(secret), "OIDC_ALLOWED_DOMAINS": "@Example.com"},
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.OIDC_RP_CLIENT_SECRET, s.OIDC_ALLOWED_DOMAINS, s.OIDC_TOKEN_USE_BASIC_AUTH)",
    )
    printed = shown.stdout.splitlines()[-1].split()  # after the shell's own line
    assert printed == [SECRET, "['example.com']", "True"], shown.stderr
    for env, message in (
        (sso_env, "OIDC_CLIENT_ID and OIDC_CLIENT_SECRET"),
        ({**sso_env, "OIDC_CLIENT_SECRET": "s", "OIDC_ISSUER": "http://id.example.com"}, "https"),
        ({**sso_env, "OIDC_CLIENT_SECRET": "s", "OIDC_SCOPES": "email"}, "must include openid"),
        ({**base, "KB_PASSWORD_LOGIN": "false"}, "KB_PASSWORD_LOGIN=false needs OIDC_ISSUER"),
    ):
        failed = manage(env, "check")
        assert failed.returncode != 0 and message in failed.stderr, failed.stderr[-500:]


@pytest.mark.browser
def test_chromium_logs_in_and_out_through_the_provider(live_server, audit_head, settings, tmp_path):
    if not Path(CHROMIUM).exists() and not REQUIRE_SERVICES:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    provider = provider_start(tmp_path, live_server.url)
    sso_settings(settings, provider)
    group_reads("eng", "sso:engineering")
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = chromium.new_page()
            page.goto(f"{live_server.url}/collections/")
            page.get_by_role("link", name="Log in with single sign-on").click()
            page.get_by_label("Login").fill("ada")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url(f"{live_server.url}/collections/")
            assert page.locator("header").get_by_text("ada").is_visible()
            assert page.get_by_role("link", name="eng").count() >= 1

            page.get_by_role("button", name="Log out").click()
            page.get_by_role("button", name="Yes, sign me out").click()
            page.wait_for_url(f"{live_server.url}/login/")
            chromium.close()
    finally:
        provider_stop(provider)
    assert kb_groups(User.objects.get(username="ada")) == {"sso:engineering", "sso:hr"}
    assert [row.actor_name for row in rows("auth.login")] == ["ada"]
