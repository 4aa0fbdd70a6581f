import io
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from kb.audit import SYSTEM
from kb.models import ApiToken, AuditEvent, Collection, Role, TokenScope
from kb.services import member_add, token_create, token_revoke


def bearer(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def create_via_cli(*args: str) -> str:
    out = io.StringIO()
    call_command("token_create", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def test_cli_token_is_last_line_and_only_its_hash_is_kept(hr: Collection, alice: User):
    secret = create_via_cli("--user", "alice", "--collections", "hr", "--scope", "read")
    assert secret.startswith("kb_")
    token = ApiToken.objects.get(user=alice)
    assert secret not in {token.secret_hash, token.prefix}
    assert bearer(secret).get("/api/v1/collections").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_token_is_limited_to_its_collections(hr: Collection, eng: Collection, alice: User):
    _, secret = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    client = bearer(secret)
    assert [c["slug"] for c in client.get("/api/v1/collections").json()["items"]] == ["hr"]
    assert client.get("/api/v1/collections/eng").status_code == 404


def test_read_scope_caps_the_role(hr: Collection, alice: User):
    _, secret = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    assert bearer(secret).get("/api/v1/collections/hr").json()["role"] == "reader"
    _, secret = token_create(
        user=alice, collections=[hr], scope=TokenScope.READ_WRITE, actor=SYSTEM
    )
    assert bearer(secret).get("/api/v1/collections/hr").json()["role"] == "editor"


def test_token_never_exceeds_its_users_rights(hr: Collection, bob: User):
    _, secret = token_create(user=bob, collections=[hr], scope=TokenScope.READ_WRITE, actor=SYSTEM)
    assert bearer(secret).get("/api/v1/collections/hr").json()["role"] == "reader"


def test_token_loses_access_when_its_user_does(hr: Collection, bob: User):
    from kb.services import member_remove

    _, secret = token_create(user=bob, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    member_remove(collection=hr, user=bob, actor=SYSTEM)
    assert bearer(secret).get("/api/v1/collections/hr").status_code == 404


def test_token_cannot_name_collections_its_user_cannot_read(hr: Collection, charlie: User):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="cannot read"):
        token_create(user=charlie, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)


def test_expired_token_is_rejected(hr: Collection, alice: User):
    token, secret = token_create(
        user=alice,
        collections=[hr],
        scope=TokenScope.READ,
        expires_at=timezone.now() + timedelta(minutes=5),
        actor=SYSTEM,
    )
    assert bearer(secret).get("/api/v1/collections").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(secret).get("/api/v1/collections").status_code == 401


def test_revoked_token_is_rejected_and_audited(hr: Collection, alice: User):
    token, secret = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    assert token_revoke(token=token, actor=SYSTEM) is True
    assert token_revoke(token=token, actor=SYSTEM) is False
    assert bearer(secret).get("/api/v1/collections").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1
    denied = AuditEvent.objects.filter(action="auth.token_failed").get()
    assert denied.outcome == "denied"


@pytest.mark.parametrize("secret", ["kb_nope_nope", "garbage", "kb_" + "a" * 12 + "_x"])
def test_malformed_or_wrong_token_is_rejected(hr: Collection, alice: User, secret: str):
    token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    assert bearer(secret).get("/api/v1/collections").status_code == 401


def test_wrong_secret_with_a_real_prefix_is_rejected(hr: Collection, alice: User):
    token, secret = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    forged = f"kb_{token.prefix}_{'x' * 43}"
    assert forged != secret
    assert bearer(forged).get("/api/v1/collections").status_code == 401


def test_service_account_acts_through_its_token(hr: Collection):
    call_command("user_create", "indexer-bot", "--service-account", stdout=io.StringIO())
    bot = User.objects.get(username="indexer-bot")
    assert not bot.has_usable_password()
    member_add(collection=hr, user=bot, role=Role.READER, actor=SYSTEM)
    secret = create_via_cli("--user", "indexer-bot", "--collections", "hr", "--scope", "read")
    assert bearer(secret).get("/api/v1/collections/hr").status_code == 200
    bearer(secret).get("/api/v1/collections/nope")
    event = AuditEvent.objects.filter(action="token.create").last()
    assert event is not None and event.detail["user"] == "indexer-bot"


def test_token_list_and_revoke_commands(hr: Collection, alice: User):
    secret = create_via_cli(
        "--user", "alice", "--collections", "hr", "--scope", "read", "--expires", "30d"
    )
    listing = io.StringIO()
    call_command("token_list", stdout=listing)
    prefix = secret.split("_")[1]
    assert prefix in listing.getvalue() and "active" in listing.getvalue()
    assert secret not in listing.getvalue()
    call_command("token_revoke", prefix, stdout=io.StringIO())
    listing = io.StringIO()
    call_command("token_list", stdout=listing)
    assert "revoked" in listing.getvalue()


def json_post(client: Client, path: str, body: Mapping[str, object]) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def test_tokens_api_makes_lists_and_revokes_own_tokens_within_rights(
    hr: Collection, alice: User, bob: User
):
    from kb.services import collection_create
    from tests.conftest import logged_in

    collection_create(slug="finance", name="Finance", actor=SYSTEM)
    session = logged_in(bob)
    made = json_post(session, "/api/v1/tokens", {"collections": ["hr"], "name": "ci"})
    assert made.status_code == 201
    secret, token_id = made.json()["secret"], made.json()["id"]
    assert bearer(secret).get("/api/v1/collections").json()["items"][0]["slug"] == "hr"
    listed = session.get("/api/v1/tokens").json()["items"]
    assert [t["id"] for t in listed] == [token_id] and "secret" not in listed[0]
    for outside in (["finance"], ["nowhere"]):
        assert json_post(session, "/api/v1/tokens", {"collections": outside}).status_code == 404
    wider = {"collections": ["hr"], "scope": "read-write"}
    assert json_post(bearer(secret), "/api/v1/tokens", wider).status_code == 403
    assert logged_in(alice).delete(f"/api/v1/tokens/{token_id}").status_code == 404
    assert session.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    assert bearer(secret).get("/api/v1/collections").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoke", actor_name="bob").exists()
