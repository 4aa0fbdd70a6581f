"""SCIM 2.0 provisioning (/scim/v2): the request sequences Okta and Microsoft Entra send,
the bearer token, and what each change does to kb's users, groups and roles."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from kb.audit import SYSTEM
from kb.models import ApiToken, AuditEvent, Collection, Role, ScimUser, TokenScope, UserSession
from kb.selectors import readable_collection_ids
from kb.services import member_add, token_create
from tests.conftest import logged_in, principal

TOKEN = "scim-test-token-" + "x" * 32
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def scim(settings, db) -> Client:
    settings.KB_SCIM_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def send(client: Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    call = getattr(client, method.lower())
    if body is None:
        return call(f"/scim/v2/{path}")
    return call(f"/scim/v2/{path}", json.dumps(body), content_type="application/scim+json")


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def actions() -> list[str]:
    return list(AuditEvent.objects.values_list("action", flat=True))


# --- the token -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["Users", "Groups", "ServiceProviderConfig", "Schemas"])
def test_without_a_token_set_scim_is_not_there(settings, db, path):
    settings.KB_SCIM_TOKEN = ""
    response = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}").get(f"/scim/v2/{path}")
    assert response.status_code == 404
    assert "KB_SCIM_TOKEN" in response.json()["detail"]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-wrong-token-wrong-token", f"Basic {TOKEN}", "Bearer"]
)
def test_a_missing_or_wrong_token_is_refused_and_audited(scim, header):
    client = Client(HTTP_AUTHORIZATION=header) if header else Client()
    response = client.get("/scim/v2/Users")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="SCIM"'
    assert response.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert actions() == ["auth.token_failed"]
    assert send(client, "POST", "Users", {"schemas": [USER], "userName": "x"}).status_code == 401
    assert not User.objects.filter(username="x").exists()


def test_an_api_token_is_not_a_scim_token(scim, hr, alice):
    _, secret = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    assert Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/scim/v2/Users").status_code == 401


def test_a_short_token_stops_start_up(monkeypatch):
    import subprocess
    import sys

    env = {"KB_SCIM_TOKEN": "too-short", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; "
            "os.environ['DJANGO_SETTINGS_MODULE']='server.settings'; django.setup()",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "KB_SCIM_TOKEN must be at least 32 characters" in done.stderr


# --- discovery -------------------------------------------------------------------------


def test_discovery_says_what_kb_keeps(scim):
    config = send(scim, "GET", "ServiceProviderConfig").json()
    assert config["patch"]["supported"] and config["filter"]["supported"]
    assert not config["bulk"]["supported"] and not config["etag"]["supported"]
    types = {
        r["name"]: r["endpoint"] for r in send(scim, "GET", "ResourceTypes").json()["Resources"]
    }
    assert types == {"User": "/Users", "Group": "/Groups"}
    schemas = {s["id"]: s for s in send(scim, "GET", "Schemas").json()["Resources"]}
    assert [a["name"] for a in schemas[USER]["attributes"]] == [
        "userName",
        "name",
        "active",
        "emails",
    ]
    assert [a["name"] for a in schemas[GROUP]["attributes"]] == ["displayName", "members"]


# --- Okta ------------------------------------------------------------------------------


def okta_user(username: str, active: bool = True) -> dict[str, Any]:
    return {
        "schemas": [USER],
        "userName": username,
        "name": {"givenName": "Dana", "familyName": "Scully"},
        "emails": [{"primary": True, "value": username, "type": "work"}],
        "displayName": "Dana Scully",
        "locale": "en-US",
        "externalId": "00u1abcd",
        "groups": [],
        "password": "Hunter2-ignored",
        "active": active,
    }


def test_okta_user_lifecycle(scim, db):
    name = "dana@example.com"
    # Okta looks the user up first, then creates them.
    found = send(scim, "GET", f'Users?filter=userName eq "{name}"&startIndex=1&count=100')
    assert found.status_code == 200 and found.json()["totalResults"] == 0
    created = send(scim, "POST", "Users", okta_user(name))
    assert created.status_code == 201, created.content
    body = created.json()
    user = User.objects.get(username=name)
    assert (user.first_name, user.last_name, user.email, user.is_active) == (
        "Dana",
        "Scully",
        name,
        True,
    )
    assert not user.has_usable_password()  # they sign in through the provider
    assert body["externalId"] == "00u1abcd" and "password" not in body
    assert created["Location"].endswith(f"/scim/v2/Users/{body['id']}")
    # A lookup is case-insensitive on userName, as RFC 7643 says.
    found = send(scim, "GET", f'Users?filter=userName eq "{name.upper()}"').json()
    assert [r["id"] for r in found["Resources"]] == [body["id"]]
    # Okta updates a profile with PUT, and deactivates with PATCH.
    renamed = okta_user(name) | {"name": {"givenName": "Dana K.", "familyName": "Scully"}}
    assert send(scim, "PUT", f"Users/{body['id']}", renamed).status_code == 200
    user.refresh_from_db()
    assert user.first_name == "Dana K."
    response = send(
        scim, "PATCH", f"Users/{body['id']}", patch({"op": "replace", "value": {"active": False}})
    )
    assert response.status_code in (200, 204)
    user.refresh_from_db()
    assert not user.is_active
    assert send(scim, "GET", f"Users/{body['id']}").json()["active"] is False
    # And reactivates.
    send(scim, "PATCH", f"Users/{body['id']}", patch({"op": "replace", "value": {"active": True}}))
    user.refresh_from_db()
    assert user.is_active
    assert actions() == ["user.create", "user.update", "user.deactivate", "user.activate"]


def test_okta_group_push_gives_roles_through_kb_groups(scim, alice):
    hr = Collection.objects.create(slug="hr", name="HR")
    dana = send(scim, "POST", "Users", okta_user("dana@example.com")).json()
    fox = send(scim, "POST", "Users", okta_user("fox@example.com") | {"externalId": "00u2"}).json()
    created = send(scim, "POST", "Groups", {"schemas": [GROUP], "displayName": "HR", "members": []})
    assert created.status_code == 201, created.content
    group_id = created.json()["id"]
    member_add(collection=hr, group=Group.objects.get(name="HR"), role=Role.READER, actor=SYSTEM)
    dana_user = User.objects.get(username="dana@example.com")
    assert hr.pk not in readable_collection_ids(principal(dana_user))

    add = {
        "op": "add",
        "path": "members",
        "value": [
            {"value": dana["id"], "display": "dana@example.com"},
            {"value": fox["id"], "display": "fox@example.com"},
        ],
    }
    response = send(scim, "PATCH", f"Groups/{group_id}", patch(add))
    assert response.status_code in (200, 204), response.content
    assert hr.pk in readable_collection_ids(principal(dana_user))
    members = send(scim, "GET", f"Groups/{group_id}").json()["members"]
    assert {m["value"] for m in members} == {dana["id"], fox["id"]}
    # A member added by hand, not provisioned, is left alone by the provider's changes.
    Group.objects.get(name="HR").user_set.add(alice)

    remove = {"op": "remove", "path": f'members[value eq "{dana["id"]}"]'}
    assert send(scim, "PATCH", f"Groups/{group_id}", patch(remove)).status_code in (200, 204)
    assert hr.pk not in readable_collection_ids(principal(dana_user))
    rename = {"op": "replace", "value": {"id": group_id, "displayName": "Human resources"}}
    assert send(scim, "PATCH", f"Groups/{group_id}", patch(rename)).status_code in (200, 204)
    group = Group.objects.get(name="Human resources")
    assert set(group.user_set.values_list("username", flat=True)) == {"fox@example.com", "alice"}
    updates = AuditEvent.objects.filter(action="group.update").order_by("seq")
    assert [(e.detail["added"], e.detail["removed"]) for e in updates] == [
        (["dana@example.com", "fox@example.com"], []),
        ([], ["dana@example.com"]),
        ([], []),
    ]
    assert updates[0].collections == "hr"

    assert send(scim, "DELETE", f"Groups/{group_id}").status_code == 204
    assert not Group.objects.filter(pk=group.pk).exists()
    assert send(scim, "GET", f"Groups/{group_id}").status_code == 404
    assert actions()[-1] == "group.delete"


# --- Microsoft Entra -------------------------------------------------------------------


def entra_user(username: str) -> dict[str, Any]:
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": "3f2a",
        "userName": username,
        "active": True,
        "displayName": "Walter Skinner",
        "title": "Assistant director",
        "emails": [{"primary": True, "type": "work", "value": username}],
        "name": {"formatted": "Walter Skinner", "familyName": "Skinner", "givenName": "Walter"},
        "addresses": [{"type": "work", "country": "US"}],
        ENTERPRISE: {"employeeNumber": "1701", "department": "FBI"},
        "roles": [],
    }


def test_entra_user_lifecycle(scim, db):
    name = "wskinner@contoso.example"
    assert send(scim, "GET", f'Users?filter=userName eq "{name}"').json()["totalResults"] == 0
    created = send(scim, "POST", "Users", entra_user(name))
    assert created.status_code == 201, created.content
    scim_id = created.json()["id"]
    # What kb does not keep (title, addresses, the enterprise extension) is dropped.
    assert "title" not in created.json() and ENTERPRISE not in created.json()
    # Entra's filter on externalId, then its PATCH: capitalised ops, a string "False",
    # a path with a filter that creates the entry it names.
    found = send(scim, "GET", 'Users?filter=externalId eq "3f2a"').json()
    assert [r["id"] for r in found["Resources"]] == [scim_id]
    response = send(
        scim,
        "PATCH",
        f"Users/{scim_id}",
        patch(
            {"op": "Replace", "path": "name.givenName", "value": "Walt"},
            {"op": "Add", "path": 'emails[type eq "home"].value', "value": "walt@home.example"},
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "ws@contoso.example",
            },
            {"op": "Replace", "path": "title", "value": "Director"},
        ),
    )
    assert response.status_code in (200, 204), response.content
    user = User.objects.get(username=name)
    assert (user.first_name, user.email) == ("Walt", "ws@contoso.example")
    emails = send(scim, "GET", f"Users/{scim_id}").json()["emails"]
    assert {(e["type"], e["value"]) for e in emails} == {
        ("work", "ws@contoso.example"),
        ("home", "walt@home.example"),
    }
    response = send(
        scim,
        "PATCH",
        f"Users/{scim_id}",
        patch({"op": "Replace", "path": "active", "value": "False"}),
    )
    assert response.status_code in (200, 204), response.content
    user.refresh_from_db()
    assert not user.is_active
    assert send(scim, "DELETE", f"Users/{scim_id}").status_code == 204
    assert not User.objects.filter(username=name).exists()
    assert send(scim, "GET", f"Users/{scim_id}").status_code == 404
    assert actions()[-2:] == ["user.deactivate", "user.delete"]


def test_entra_group_membership(scim, db):
    walter = send(scim, "POST", "Users", entra_user("ws@contoso.example")).json()
    created = send(
        scim,
        "POST",
        "Groups",
        {"schemas": [GROUP], "externalId": "g-17", "displayName": "X-Files", "members": []},
    )
    assert created.status_code == 201, created.content
    group_id = created.json()["id"]
    found = send(scim, "GET", 'Groups?filter=displayName eq "x-files"&excludedAttributes=members')
    assert [r["id"] for r in found.json()["Resources"]] == [group_id]
    assert "members" not in found.json()["Resources"][0]
    add = {"op": "Add", "path": "members", "value": [{"value": walter["id"]}]}
    assert send(scim, "PATCH", f"Groups/{group_id}", patch(add)).status_code in (200, 204)
    assert list(Group.objects.get(name="X-Files").user_set.values_list("username", flat=True)) == [
        "ws@contoso.example"
    ]
    # Entra names the member to remove in `value`, not in the path.
    remove = {"op": "Remove", "path": "members", "value": [{"value": walter["id"]}]}
    assert send(scim, "PATCH", f"Groups/{group_id}", patch(remove)).status_code in (200, 204)
    assert not Group.objects.get(name="X-Files").user_set.exists()


# --- refusals --------------------------------------------------------------------------


def test_a_taken_user_name_is_a_conflict_and_local_users_stay_invisible(scim, alice):
    response = send(scim, "POST", "Users", okta_user("ALICE"))
    assert response.status_code == 409
    assert "taken" in response.json()["detail"]
    assert send(scim, "GET", 'Users?filter=userName eq "alice"').json()["totalResults"] == 0
    assert send(scim, "GET", "Users").json()["totalResults"] == 0


def test_bad_values_answer_what_is_wrong(scim, db):
    response = send(scim, "POST", "Users", okta_user("has space") | {"emails": []})
    assert response.status_code == 400
    assert "username" in response.json()["detail"]
    unknown = {"schemas": [GROUP], "displayName": "G", "members": [{"value": "nobody"}]}
    response = send(scim, "POST", "Groups", unknown)
    assert response.status_code == 400 and "nobody" in response.json()["detail"]
    assert not Group.objects.filter(name="G").exists()
    response = send(scim, "POST", "Users", {"schemas": [USER], "userName": "a\u0000b"})
    assert response.status_code == 400


# --- deactivation ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["patch", "put", "delete"])
def test_deactivating_ends_sessions_and_revokes_tokens_at_once(scim, hr, how):
    body = send(scim, "POST", "Users", okta_user("dana@example.com")).json()
    dana = User.objects.get(username="dana@example.com")
    member_add(collection=hr, user=dana, role=Role.READER, actor=SYSTEM)
    token, _ = token_create(user=dana, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    logged_in(dana)
    other = logged_in(User.objects.get(username="bob"))
    assert UserSession.objects.count() == 2
    if how == "patch":
        operation = {"op": "replace", "path": "active", "value": False}
        send(scim, "PATCH", f"Users/{body['id']}", patch(operation))
    elif how == "put":
        send(scim, "PUT", f"Users/{body['id']}", okta_user("dana@example.com", active=False))
    else:
        send(scim, "DELETE", f"Users/{body['id']}")
    assert UserSession.objects.count() == 1  # bob's stays
    assert other.get("/api/v1/collections").status_code == 200
    live = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True)
    assert not live.exists()  # revoked, or (delete) gone with its user
    row = AuditEvent.objects.get(action="user.deactivate")
    assert row.actor_type == "scim"
    assert row.detail == {
        "user": "dana@example.com",
        "tokens_revoked": [token.prefix],
        "sessions_ended": 1,
    }
    assert AuditEvent.objects.filter(action="token.revoke", seq__lt=row.seq).count() == 1


def test_unticking_active_in_the_admin_deactivates(db, hr, bob, settings):
    admin = User.objects.create_superuser("root", password="root-pass-123")
    token, _ = token_create(user=bob, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    logged_in(bob)
    client = logged_in(admin)
    form = client.get(f"/admin/auth/user/{bob.pk}/change/").context["adminform"].form
    data = {
        key: value
        for key, value in form.initial.items()
        if value is not None and key not in ("password", "is_active", "groups", "user_permissions")
    }
    data |= {
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": bob.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": bob.date_joined.strftime("%H:%M:%S"),
    }
    response = client.post(f"/admin/auth/user/{bob.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    bob.refresh_from_db()
    assert not bob.is_active
    token.refresh_from_db()
    assert token.revoked_at is not None
    row = AuditEvent.objects.get(action="user.deactivate")
    assert (row.actor_name, row.detail["sessions_ended"]) == ("root", 1)
    assert UserSession.objects.count() == 1  # the administrator's own
    assert ScimUser.objects.count() == 0


def test_a_password_login_is_findable_by_its_user(db, bob):
    client = Client()
    response = client.post("/login/", {"username": "bob", "password": "bob-pass-123"})
    assert response.status_code == 302
    (session,) = UserSession.objects.all()
    assert session.user_id == bob.pk
    assert session.session_key == client.session.session_key
    client.post("/logout/")
    assert not UserSession.objects.exists()
