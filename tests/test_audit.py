"""The audit trail: a row for every action, and a chain that betrays any edit."""

import io
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from kb.audit import SYSTEM, audit_record, audit_verify
from kb.models import AuditChainHead, AuditEvent, Collection, Membership, Role
from kb.services import member_add


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def raw(sql: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def trail(audit_head) -> list[AuditEvent]:
    # Transactional: the head outside the database is written as each row commits.
    return [audit_record(action=f"test.{n}", actor=SYSTEM, query=f"q{n}") for n in range(5)]


def test_fresh_trail_verifies(trail):
    assert run("audit_verify").startswith("audit chain intact: 5 rows")


def test_verify_catches_an_edited_row(trail):
    raw("UPDATE kb_auditevent SET query = %s WHERE seq = 3", "something else")
    with pytest.raises(CommandError, match=r"seq 3 .* was edited"):
        run("audit_verify")


def test_verify_catches_a_deleted_row(trail):
    raw("DELETE FROM kb_auditevent WHERE seq = 2")
    with pytest.raises(CommandError, match="seq 2 is missing"):
        run("audit_verify")


def test_verify_catches_deleted_newest_rows(trail):
    raw("DELETE FROM kb_auditevent WHERE seq = 5")
    with pytest.raises(CommandError, match="newest rows were deleted"):
        run("audit_verify")


def test_verify_catches_reordered_rows(trail):
    raw("UPDATE kb_auditevent SET seq = -1 WHERE seq = 2")
    raw("UPDATE kb_auditevent SET seq = 2 WHERE seq = 3")
    raw("UPDATE kb_auditevent SET seq = 3 WHERE seq = -1")
    result = audit_verify()
    assert not result.ok and "seq 2" in result.message


def test_verify_catches_a_forged_row_with_a_recomputed_hash(trail):
    from kb.audit import row_hash, texts_digest
    from kb.audit_anchor import audit_key

    forged = AuditEvent.objects.get(seq=3)
    forged.query = "forged"
    forged.texts_hash = texts_digest(forged, audit_key())
    forged_hash = row_hash(forged, audit_key())
    raw(
        "UPDATE kb_auditevent SET query = %s, texts_hash = %s, hash = %s WHERE seq = 3",
        *("forged", forged.texts_hash, forged_hash),
    )
    result = audit_verify()
    assert not result.ok and "seq 4" in result.message


def rewrite_from(seq: int, key: bytes | None) -> None:
    """What a database writer without the audit key can do: recompute every hash from
    `seq` on (plain SHA-256, or HMAC under a key of their own) and move the head."""
    from kb.audit import row_hash

    prev = AuditEvent.objects.get(seq=seq).prev_hash
    for event in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
        event.prev_hash = prev
        prev = row_hash(event, key)
        raw(
            "UPDATE kb_auditevent SET prev_hash = %s, hash = %s WHERE seq = %s",
            *(event.prev_hash, prev, event.seq),
        )
    raw("UPDATE kb_auditchainhead SET hash = %s", prev)


@pytest.mark.parametrize("key", [None, b"a key of the attacker's own"])
def test_verify_catches_an_edit_with_every_later_hash_recomputed(trail, key):
    raw("UPDATE kb_auditevent SET query = %s WHERE seq = 2", "forged")
    rewrite_from(2, key)
    result = audit_verify()
    assert not result.ok and "seq 2 " in result.message and "edited" in result.message


def test_verify_catches_newest_rows_deleted_and_the_head_moved_back(trail):
    raw("DELETE FROM kb_auditevent WHERE seq > 3")
    raw("UPDATE kb_auditchainhead SET seq = 3, hash = %s", trail[2].hash)
    result = audit_verify()
    assert not result.ok
    assert "the head kept outside the database is at seq 5" in result.message


def test_verify_catches_every_row_deleted_and_the_head_reset(trail):
    from kb.audit import GENESIS

    raw("DELETE FROM kb_auditevent")
    raw("UPDATE kb_auditchainhead SET seq = 0, hash = %s", GENESIS)
    result = audit_verify()
    assert not result.ok and "newest rows were deleted" in result.message


def test_verify_catches_a_prune_checkpoint_forged_to_hide_deleted_rows(trail):
    from kb.models import AuditCheckpoint

    raw("DELETE FROM kb_auditevent WHERE seq <= 3")
    AuditCheckpoint.objects.create(seq=3, hash=trail[2].hash, pruned_rows=3, before=timezone.now())
    result = audit_verify()
    assert not result.ok and "prune checkpoint" in result.message


def test_rows_verify_only_under_the_key_they_were_written_with(trail, settings):
    settings.KB_AUDIT_KEY = "another key"
    result = audit_verify()
    assert not result.ok and "seq 1 " in result.message


def test_rows_from_before_keyed_hashes_still_verify_and_are_protected(audit_head, monkeypatch):
    from kb import audit
    from kb.audit_anchor import head_path

    # A kb before this change: plain hashes, no head outside the database.
    unkeyed = audit.row_hash
    monkeypatch.setattr(audit, "row_hash", lambda event, key: unkeyed(event, None))
    monkeypatch.setattr(audit, "_anchor", lambda **kwargs: None)
    for _ in range(3):
        audit_record(action="test.old", actor=SYSTEM)
    monkeypatch.undo()
    assert not audit_verify().ok  # rows, and no head kept outside to confirm them
    audit_record(action="test.new", actor=SYSTEM)
    assert head_path().exists()
    result = audit_verify()
    assert result.ok and result.checked == 4, result.message
    raw("UPDATE kb_auditevent SET query = %s WHERE seq = 2", "forged")
    rewrite_from(2, None)
    assert not audit_verify().ok


def test_each_head_is_logged_for_a_sink_outside_the_database(audit_head, caplog):
    with caplog.at_level("INFO", logger="kb.audit.head"):
        event = audit_record(action="test.logged", actor=SYSTEM)
    assert f"audit head seq={event.seq} hash={event.hash}" in caplog.text


def test_orm_and_admin_refuse_changes(trail):
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(seq=1).update(query="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    row = AuditEvent.objects.get(seq=1)
    row.query = "x"
    with pytest.raises(PermissionError):
        row.save()
    with pytest.raises(PermissionError):
        row.delete()
    model_admin = admin.site._registry[AuditEvent]
    request = type("R", (), {"user": None})()
    assert not model_admin.has_change_permission(request, row)
    assert not model_admin.has_delete_permission(request, row)


def test_action_fails_when_its_audit_row_cannot_be_written(hr: Collection, charlie):
    raw("DELETE FROM kb_auditchainhead")
    with pytest.raises(AuditChainHead.DoesNotExist):
        member_add(collection=hr, user=charlie, role=Role.READER, actor=SYSTEM)
    assert not Membership.objects.filter(user=charlie).exists()


def test_membership_changes_are_audited_with_detail(hr: Collection, charlie):
    member_add(collection=hr, user=charlie, role=Role.EDITOR, actor=SYSTEM)
    event = AuditEvent.objects.filter(action="member.add").last()
    assert event is not None
    assert event.collections == "hr"
    assert event.detail == {"user": "charlie", "role": "editor", "previous": None}


def test_failed_login_is_audited_with_client_details(alice):
    client = Client(HTTP_USER_AGENT="pytest-browser", REMOTE_ADDR="10.1.2.3")
    response = client.post("/admin/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200  # the form again, with an error
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert (event.outcome, event.actor_name) == ("denied", "alice")
    assert (event.client_ip, event.user_agent) == ("10.1.2.3", "pytest-browser")
    assert len(event.request_id) == 32


def test_request_id_is_echoed_and_recorded(hr: Collection):
    client = Client(HTTP_AUTHORIZATION="Bearer kb_bad_token", HTTP_X_REQUEST_ID="req-42")
    response = client.get("/api/v1/collections")
    assert response.status_code == 401 and response["X-Request-ID"] == "req-42"
    assert AuditEvent.objects.get(action="auth.token_failed").request_id == "req-42"


def test_export_filters_by_user_collection_and_time(hr: Collection, eng: Collection):
    lines = run("audit_export", "--collection", "eng").splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows and all("eng" in row["collections"].split() for row in rows)
    assert not any(row["collections"] == "hr" for row in rows)
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert run("audit_export", "--since", tomorrow) == ""
    assert run("audit_export", "--user", "nobody") == ""
    csv_text = run("audit_export", "--format", "csv", "--collection", "hr")
    header, *body = csv_text.strip().splitlines()
    assert header.startswith("id,seq,created_at,action") and len(body) >= 3


def test_prune_keeps_the_rest_verifiable(trail):
    cut = timezone.now()
    later = [audit_record(action="test.later", actor=SYSTEM) for _ in range(3)]
    out = run("audit_prune", "--before", cut.isoformat())
    assert "pruned 5" in out
    assert not AuditEvent.objects.filter(seq__lte=5).exists()
    assert AuditEvent.objects.filter(action="audit.prune").exists()
    assert audit_verify().ok, audit_verify().message
    raw("DELETE FROM kb_auditevent WHERE seq = %s", later[0].seq)
    assert not audit_verify().ok


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_chain(audit_head):
    def write(n: int) -> None:
        from django.db import connection as thread_connection

        for i in range(10):
            audit_record(action="test.concurrent", actor=SYSTEM, query=f"{n}-{i}")
        thread_connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = audit_verify()
    assert result.ok, result.message
    assert result.checked == 40


def test_a_column_added_later_leaves_old_rows_verifiable_and_protects_new_ones(
    audit_head, monkeypatch
):
    from kb import audit

    # Rows written by a kb that did not know the column yet (here `model` stands in).
    before = tuple(name for name in audit.HASHED_FIELDS if name != "model")
    monkeypatch.setattr(audit, "HASHED_FIELDS", before)
    old = [audit_record(action="test.old", actor=SYSTEM) for _ in range(3)]
    # The change that adds it lists it with its default, as the rule beside the fields says.
    monkeypatch.setattr(audit, "LATER_FIELDS", {"model": ""})
    new = audit_record(action="test.new", actor=SYSTEM, model="qwen")
    assert audit_verify().ok
    assert "model" in audit.export_fields()
    raw("UPDATE kb_auditevent SET model = %s WHERE seq = %s", "other", new.seq)
    result = audit_verify()
    assert not result.ok and f"seq {new.seq} " in result.message
    raw("UPDATE kb_auditevent SET model = %s WHERE seq = %s", "qwen", new.seq)
    raw("UPDATE kb_auditevent SET model = %s WHERE seq = %s", "added", old[1].seq)
    result = audit_verify()
    assert not result.ok and f"seq {old[1].seq} " in result.message


def test_refused_document_reads_and_writes_are_audited_as_denied(docs, bob, charlie):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from ingest.models import Chunk
    from tests.conftest import logged_in

    document = docs["holiday"]
    chunk = Chunk.objects.filter(document=document).first()
    assert chunk is not None
    outsider, reader = logged_in(charlie), logged_in(bob)
    before = AuditEvent.objects.count()
    attempts = [
        (outsider.get(f"/passages/{chunk.pk}"), "passage.read", "charlie"),
        (outsider.get(f"/documents/{document.pk}/download"), "document.download", "charlie"),
        (outsider.get("/api/v1/collections/hr/documents"), "document.list", "charlie"),
        (outsider.get(f"/api/v1/documents/{document.pk}"), "document.read", "charlie"),
        (outsider.get(f"/api/v1/documents/{document.pk}/content"), "document.download", "charlie"),
        (reader.post(f"/api/v1/documents/{document.pk}/reingest"), "document.reingest", "bob"),
        (reader.delete(f"/api/v1/documents/{document.pk}"), "document.delete", "bob"),
        (
            reader.post(
                "/api/v1/collections/hr/documents",
                {"file": SimpleUploadedFile("a.txt", b"text")},
            ),
            "document.upload",
            "bob",
        ),
        (reader.post(f"/documents/{document.pk}/delete"), "document.delete", "bob"),
    ]
    assert all(response.status_code in (403, 404) for response, _, _ in attempts)
    denied = list(AuditEvent.objects.filter(seq__gt=before, outcome="denied").order_by("seq"))
    assert [(e.action, e.actor_name) for e in denied] == [(a, who) for _, a, who in attempts]


def test_audit_api_streams_filtered_rows_to_administrators_and_verifies(audit_head, hr, bob):
    import csv
    import io
    import json

    from django.contrib.auth.models import User

    from tests.conftest import logged_in

    admin = logged_in(User.objects.create_superuser("root", password="root-pass-123"))
    logged_in(bob).get("/api/v1/collections/hr/documents")
    response = admin.get("/api/v1/audit?action=document.list&user=bob")
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in response.getvalue().decode().splitlines()]
    assert [(r["action"], r["actor_name"]) for r in rows] == [("document.list", "bob")]
    table = admin.get("/api/v1/audit?format=csv&collection=hr").getvalue().decode()
    assert {r["action"] for r in csv.DictReader(io.StringIO(table))} >= {"document.list"}
    assert logged_in(bob).get("/api/v1/audit").status_code == 403
    assert admin.get("/api/v1/audit/verify").json()["ok"] is True
    assert AuditEvent.objects.filter(action="audit.export", actor_name="root").count() == 2


def test_an_administrators_token_reads_only_its_collections_rows(audit_head, hr):
    import json

    from django.contrib.auth.models import User
    from django.test import Client

    from kb.audit import SYSTEM, audit_record
    from kb.models import TokenScope
    from kb.services import collection_create, token_create

    admin = User.objects.create_superuser("root", password="root-pass-123")
    collection_create(slug="finance", name="Finance", actor=SYSTEM)
    audit_record(action="search", actor=SYSTEM, collections=["finance"], query="merger")
    audit_record(action="search", actor=SYSTEM, collections=["hr"], query="holiday")
    _, secret = token_create(user=admin, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    body = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/v1/audit?action=search")
    rows = [json.loads(line) for line in body.getvalue().decode().splitlines()]
    assert [r["query"] for r in rows] == ["holiday"]
