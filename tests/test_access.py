"""alice owns hr, bob reads it, charlie is an outsider: every read path agrees."""

import json

import pytest
from django.contrib.auth.models import Group, User

from ingest.models import Chunk, Document
from ingest.vectors import vector_store
from kb.audit import SYSTEM
from kb.models import Collection, Role, TokenScope
from kb.principal import Principal
from kb.selectors import (
    ReadOnlyAccess,
    collection_get,
    readable_collection_ids,
    readable_collections,
)
from kb.services import (
    collection_create,
    member_add,
    member_remove,
    token_create,
    user_create,
)
from tests.conftest import logged_in, principal
from tests.test_ingest import upload


def test_readable_collections_follow_membership(
    hr: Collection, eng: Collection, alice, bob, charlie
):
    assert readable_collection_ids(principal(alice)) == {hr.pk, eng.pk}
    assert readable_collection_ids(principal(bob)) == {hr.pk}
    assert readable_collection_ids(principal(charlie)) == set()


def test_superuser_reads_everything(hr: Collection, eng: Collection):
    root = user_create(username="root", superuser=True, actor=SYSTEM)[0]
    assert readable_collections(principal(root)) == [(hr, Role.OWNER), (eng, Role.OWNER)]
    # Through a token, only its collections, at its scope's role.
    token = token_create(user=root, collections=[eng], scope=TokenScope.READ, actor=SYSTEM)[0]
    assert readable_collections(Principal(user=root, token=token)) == [(eng, Role.READER)]


def test_inactive_user_reads_nothing(hr: Collection, bob: User):
    bob.is_active = False
    bob.save()
    assert readable_collection_ids(principal(bob)) == set()


def test_group_membership_grants_and_best_role_wins(hr: Collection, bob: User, charlie: User):
    staff = Group.objects.create(name="staff")
    charlie.groups.add(staff)
    bob.groups.add(staff)
    member_add(collection=hr, group=staff, role=Role.EDITOR, actor=SYSTEM)
    assert readable_collection_ids(principal(charlie)) == {hr.pk}
    # bob is a reader himself and an editor through the group: editor it is.
    assert collection_get(principal(bob), "hr", role=Role.EDITOR)[1] == Role.EDITOR


def test_a_tokens_collections_and_roles_come_in_one_query(
    hr: Collection, eng: Collection, alice: User, django_assert_num_queries
):
    """The check runs before every search and answer: one query, the token's cap kept."""
    staff = Group.objects.create(name="staff")
    alice.groups.add(staff)
    member_add(collection=eng, group=staff, role=Role.READER, actor=SYSTEM)
    token = token_create(user=alice, collections=[eng], scope=TokenScope.READ, actor=SYSTEM)[0]
    with django_assert_num_queries(1):
        found = readable_collections(Principal(user=alice, token=token))
    assert found == [(eng, Role.READER)]


def test_missing_and_forbidden_look_the_same(hr: Collection, charlie: User):
    outsider = logged_in(charlie)
    forbidden = outsider.get("/api/v1/collections/hr")
    missing = outsider.get("/api/v1/collections/no-such-thing")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json() == missing.json()


def test_reader_cannot_act_as_editor(hr: Collection, bob: User):
    with pytest.raises(ReadOnlyAccess):
        collection_get(principal(bob), "hr", role=Role.EDITOR)


@pytest.mark.parametrize(
    ("persona", "expected"),
    [("alice", ["hr:owner"]), ("bob", ["hr:reader"]), ("charlie", [])],
)
def test_collections_api_lists_only_readable(hr: Collection, persona: str, expected: list[str]):
    response = logged_in(User.objects.get(username=persona)).get("/api/v1/collections")
    assert response.status_code == 200
    assert [f"{c['slug']}:{c['role']}" for c in response.json()["items"]] == expected


def test_api_requires_authentication(hr: Collection, client):
    assert client.get("/api/v1/collections").status_code == 401


def test_revoking_membership_takes_effect_on_next_request(hr: Collection, bob: User):
    browser = logged_in(bob)
    assert browser.get("/api/v1/collections/hr").status_code == 200
    member_remove(collection=hr, user=bob, actor=SYSTEM)
    assert browser.get("/api/v1/collections/hr").status_code == 404


def test_collection_slug_is_validated(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        collection_create(slug="Bad Slug!", name="x", actor=SYSTEM)


def test_collections_api_create_change_share_and_delete(pipeline, hr, alice, bob, charlie):
    admin = logged_in(User.objects.create_superuser("root", password="root-pass-123"))
    owner, reader = logged_in(alice), logged_in(bob)
    body = {"slug": "legal", "name": "Legal"}
    assert json_post(owner, "/api/v1/collections", body).status_code == 403
    created = json_post(admin, "/api/v1/collections", body)
    assert created.status_code == 201 and created.json()["documents"] == 0
    assert json_post(admin, "/api/v1/collections", body).json()["code"] == "conflict"

    listed = {c["slug"]: c for c in owner.get("/api/v1/collections").json()["items"]}
    assert list(listed) == ["hr"]
    upload(hr, "cafe.txt", b"The canteen opens at eight.")
    counts = owner.get("/api/v1/collections/hr").json()
    assert (counts["documents"], counts["passages"], counts["role"]) == (1, 1, "owner")

    member = "/api/v1/collections/hr/members/user/charlie"
    assert reader.put(member, {"role": "reader"}, "application/json").status_code == 403
    assert owner.put(member, {"role": "reader"}, "application/json").json()["role"] == "reader"
    assert logged_in(charlie).get("/api/v1/collections/hr").status_code == 200
    names = [m["name"] for m in owner.get("/api/v1/collections/hr/members").json()["items"]]
    assert sorted(names) == ["alice", "bob", "charlie"]
    assert owner.delete(member).status_code == 204
    assert owner.delete(member).status_code == 404
    assert logged_in(charlie).get("/api/v1/collections/hr").status_code == 404

    change = owner.patch("/api/v1/collections/hr", {"name": "People"}, "application/json")
    assert change.json()["name"] == "People"
    assert (
        reader.patch("/api/v1/collections/hr", {"name": "x"}, "application/json").status_code == 403
    )
    assert reader.delete("/api/v1/collections/hr").status_code == 403
    assert owner.delete("/api/v1/collections/hr").status_code == 204
    assert not Document.objects.exists() and not Chunk.objects.exists()
    assert vector_store().count() == 0
    assert owner.get("/api/v1/collections/hr").status_code == 404


def test_deleting_a_collection_in_the_admin_removes_its_files_and_vectors(pipeline, hr):
    from ingest import storage

    admin = logged_in(User.objects.create_superuser("root", password="root-pass-123"))
    upload(hr, "cafe.txt", b"The canteen opens at eight.")
    sha = Document.objects.get().versions.get().sha256
    assert vector_store().count() > 0 and storage.path_for(sha).exists()
    page = f"/admin/kb/collection/{hr.pk}/delete/"
    assert admin.post(page, {"post": "yes"}).status_code == 302
    assert not Collection.objects.filter(slug="hr").exists()
    assert not Document.objects.exists() and not Chunk.objects.exists()
    assert vector_store().count() == 0
    assert not storage.path_for(sha).exists()


def json_post(client, path: str, body: dict[str, str]):
    return client.post(path, json.dumps(body), content_type="application/json")
