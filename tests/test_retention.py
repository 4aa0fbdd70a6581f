"""Retention: question and answer texts expire per collection, in the audit trail and in
conversations, a legal hold keeps them, and the audit chain still verifies."""

import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from kb.audit import SYSTEM, audit_prune, audit_record, audit_verify
from kb.models import AuditEvent, Collection
from kb.services import collection_update, user_create
from retrieval.conversations import feedback_give
from retrieval.models import Conversation, Exchange, Rating
from tests.conftest import events_of, logged_in

QUESTION = "Is the reorganisation of the Leeds office going to cost jobs?"
ANSWER = "Yes: twelve posts go in March [1]."


@contextmanager
def days_ago(days: int) -> Iterator[None]:
    """What is written in here is dated `days` ago (audit rows, exchanges)."""
    then = timezone.now() - timedelta(days=days)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: then)
        yield


def asked(*slugs: str, days: int, query: str = QUESTION) -> AuditEvent:
    with days_ago(days):
        return audit_record(
            action="ask",
            actor=SYSTEM,
            collections=slugs,
            query=query,
            answer=ANSWER,
            rewritten_query=query + " (Leeds)",
            chunk_ids=[7, 8],
            detail={"query_id": uuid.uuid4().hex},
        )


def expire() -> str:
    out = io.StringIO()
    call_command("retention_expire", stdout=out)
    return out.getvalue()


def raw(sql: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def keep(collection: Collection, days: int | None, hold: bool = False) -> None:
    collection_update(
        collection=collection, actor=SYSTEM, text_retention_days=days, legal_hold=hold
    )


def verified() -> None:
    result = audit_verify()
    assert result.ok, result.message


def fresh(event: AuditEvent) -> AuditEvent:
    return AuditEvent.objects.get(pk=event.pk)


def test_texts_expire_after_their_days_and_the_chain_still_verifies(audit_head, hr, root):
    keep(hr, 30)
    old, young = asked("hr", days=31), asked("hr", days=29)
    login = audit_record(action="auth.login", actor=SYSTEM)
    assert expire() == "expired the texts of 1 audit rows and 0 conversation exchanges\n"
    run = AuditEvent.objects.get(action="retention.expire")
    assert run.actor_name.startswith("cli:") and run.collections == "hr"
    assert run.detail["audit_rows"] == 1 and run.detail["cutoffs"]["hr"]
    gone = fresh(old)
    assert (gone.query, gone.answer, gone.rewritten_query) == ("", "", "")
    assert gone.texts_expired_by == run.seq
    # The rest of the row stays: who, when, where, what was returned.
    assert gone.collections == "hr" and gone.chunk_ids == [7, 8] and gone.detail == old.detail
    assert fresh(young).query == QUESTION and fresh(login).texts_expired_by is None
    verified()
    shown = logged_in(root).get(f"/audit/{old.seq}").content.decode()
    assert "expired under retention" in shown and "Leeds" not in shown
    # A second run finds nothing more, and writes no row.
    assert expire().startswith("expired the texts of 0 audit rows")
    assert AuditEvent.objects.filter(action="retention.expire").count() == 1
    verified()


def test_a_text_edited_or_erased_outside_a_run_is_caught(audit_head, hr, eng):
    keep(hr, 30)
    old, young, held = asked("hr", days=40), asked("hr", days=5), asked("eng", days=40)
    expire()
    verified()
    run = AuditEvent.objects.get(action="retention.expire")

    raw("UPDATE kb_auditevent SET answer = %s WHERE seq = %s", "No.", young.seq)
    result = audit_verify()
    assert not result.ok and f"seq {young.seq} " in result.message
    assert "texts do not match" in result.message
    raw("UPDATE kb_auditevent SET answer = %s WHERE seq = %s", ANSWER, young.seq)
    verified()

    # Erased without a run, or dressed up as the run's work where the run kept the texts
    # (too young, or a collection that keeps them).
    for seq, by in ((young.seq, None), (young.seq, run.seq), (held.seq, run.seq)):
        texts_set(seq, "", "", "", by)
        result = audit_verify()
        assert not result.ok and f"seq {seq} " in result.message, (seq, by)
        texts_set(seq, QUESTION, ANSWER, QUESTION + " (Leeds)", None)
        verified()
    # A text slipped back into an expired row.
    texts_set(old.seq, "forged", "", "", run.seq)
    result = audit_verify()
    assert not result.ok and f"seq {old.seq} " in result.message


def texts_set(seq: int, query: str, answer: str, rewritten: str, by: int | None) -> None:
    raw(
        "UPDATE kb_auditevent SET query = %s, answer = %s, rewritten_query = %s, "
        "texts_expired_by = %s WHERE seq = %s",
        query,
        answer,
        rewritten,
        by,
        seq,
    )


def test_a_legal_hold_keeps_the_texts_of_every_row_that_touches_it(audit_head, hr, eng):
    keep(hr, 30)
    keep(eng, 30, hold=True)
    alone, both, held = asked("hr", days=60), asked("eng", "hr", days=60), asked("eng", days=60)
    expire()
    assert fresh(alone).query == "" and fresh(both).query == QUESTION
    assert fresh(held).query == QUESTION
    verified()
    keep(eng, 30, hold=False)  # the hold is lifted: its texts go at the next run
    expire()
    assert fresh(both).query == "" and fresh(held).query == ""
    assert AuditEvent.objects.filter(action="retention.expire").count() == 2
    verified()


def test_the_default_days_and_what_a_collection_sets_instead(audit_head, hr, eng, settings):
    settings.KB_TEXT_RETENTION_DAYS = 30
    keep(hr, 0)  # kept for good, whatever the default
    kept, defaulted, nowhere = asked("hr", days=90), asked("eng", days=31), asked(days=31)
    # A refused question names no collection: the ones it asked for decide.
    with days_ago(90):
        refused = audit_record(
            action="ask", actor=SYSTEM, query=QUESTION, detail={"requested": ["hr"]}
        )
    keep(eng, 60)  # longer than the default
    expire()
    assert fresh(kept).query == QUESTION and fresh(refused).query == QUESTION
    assert fresh(defaulted).query == QUESTION and fresh(nowhere).query == ""
    keep(eng, None)  # back to the default
    expire()
    assert fresh(defaulted).query == ""
    verified()


def test_rows_written_before_texts_were_digested_keep_their_texts(audit_head, hr, monkeypatch):
    from kb import audit

    keep(hr, 30)
    # A kb before retention: no digest, its texts in the row hash.
    with monkeypatch.context() as patch:
        patch.setattr(audit, "LATER_FIELDS", {"rewritten_query": ""})
        patch.setattr(audit, "texts_of", lambda event: {})
        old = asked("hr", days=60)
    assert old.texts_hash == ""
    expire()
    assert fresh(old).query == QUESTION
    verified()


def test_expired_rows_are_pruned_whole_as_before(audit_head, hr):
    keep(hr, 30)
    first, second, recent = asked("hr", days=50), asked("hr", days=40), asked("hr", days=1)
    expire()
    assert fresh(second).query == ""
    removed = audit_prune(before=timezone.now() - timedelta(days=45), actor=SYSTEM)
    assert removed >= 1 and not AuditEvent.objects.filter(seq=first.seq).exists()
    verified()
    audit_prune(before=timezone.now(), actor=SYSTEM)
    assert not AuditEvent.objects.filter(seq__lte=recent.seq).exists()
    verified()


def test_conversations_lose_their_texts_too(audit_head, hr, bob):
    keep(hr, 30)
    client = logged_in(bob)
    with days_ago(40):
        # An empty collection: kb refuses without asking a model, and keeps the exchange.
        events = dict(events_of(client.post("/ask/stream", {"question": QUESTION})))
        query_id = events["saved"]["query_id"]
        feedback_give(user=bob, query_id=query_id, rating=Rating.DOWN, comment="Leeds? Really?")
    exchange = Exchange.objects.get(query_id=query_id)
    assert exchange.collections == "hr" and exchange.question == QUESTION
    conversation = exchange.conversation
    # The feedback's comment is a text of the trail too, under the same retention.
    rated = AuditEvent.objects.get(action="feedback")
    assert rated.collections == "hr" and rated.texts_hash
    edited = {**rated.detail, "comment": "Fine."}
    raw("UPDATE kb_auditevent SET detail = %s WHERE seq = %s", json.dumps(edited), rated.seq)
    assert "texts do not match" in audit_verify().message
    raw("UPDATE kb_auditevent SET detail = %s WHERE seq = %s", json.dumps(rated.detail), rated.seq)
    verified()
    assert expire() == "expired the texts of 2 audit rows and 1 conversation exchanges\n"
    assert fresh(rated).detail == {"query_id": query_id, "rating": "down"}
    exchange.refresh_from_db()
    assert exchange.expired_at and "expired on" in exchange.question
    assert QUESTION not in exchange.question and exchange.answer == ""
    assert exchange.feedback.comment == ""
    assert Conversation.objects.get(pk=conversation.pk).title == "Expired conversation"
    page = client.get(f"/conversations/{conversation.pk}").content.decode()
    assert "Leeds" not in page and "expired on" in page
    row = AuditEvent.objects.get(action="ask", detail__query_id=query_id)
    assert row.query == "" and row.answer == ""
    verified()


@pytest.fixture
def root(db: None) -> User:
    return user_create(username="root", password="root-pass-123", superuser=True, actor=SYSTEM)[0]


def patch_json(client: Any, body: dict[str, Any]) -> Any:
    return client.patch("/api/v1/collections/hr", json.dumps(body), "application/json")


def test_retention_and_hold_are_set_by_administrators_and_audited(audit_head, hr, alice, root):
    admin, owner = logged_in(root), logged_in(alice)
    response = patch_json(admin, {"text_retention_days": 30, "legal_hold": True})
    assert response.status_code == 200, response.content
    assert (response.json()["text_retention_days"], response.json()["legal_hold"]) == (30, True)
    change = AuditEvent.objects.filter(action="collection.update").latest("seq")
    assert change.actor_name == "root" and change.collections == "hr"
    assert change.detail == {
        "changed": ["legal_hold", "text_retention_days"],
        "legal_hold": True,
        "text_retention_days": 30,
    }
    # A held collection cannot be deleted (the hold would go with it).
    held = owner.delete("/api/v1/collections/hr")
    assert held.status_code == 409 and "legal hold" in held.json()["message"]
    assert Collection.objects.filter(slug="hr").exists()
    # Owners change the rest, not these.
    refused = patch_json(owner, {"legal_hold": False})
    assert refused.status_code == 403 and "administrator" in refused.json()["message"]
    assert patch_json(owner, {"text_retention_days": 1}).status_code == 403
    assert patch_json(owner, {"name": "People"}).status_code == 200
    for bad in (-1, 36501, "soon"):
        assert patch_json(admin, {"text_retention_days": bad}).status_code == 422, bad
    assert patch_json(admin, {"legal_hold": "maybe"}).status_code == 422
    hr.refresh_from_db()
    assert (hr.text_retention_days, hr.legal_hold) == (30, True)
    # null: back to the default.
    assert patch_json(admin, {"text_retention_days": None}).json()["text_retention_days"] is None

    # The settings page: the administrator sees and sets them, the owner does not see them.
    assert "legal_hold" not in owner.get("/collections/hr/settings").content.decode()
    assert "legal_hold" in admin.get("/collections/hr/settings").content.decode()
    form = {"name": "People", "text_retention_days": "90", "legal_hold": ""}
    assert admin.post("/collections/hr/settings", form).status_code == 302
    hr.refresh_from_db()
    assert (hr.text_retention_days, hr.legal_hold) == (90, False)
    change = AuditEvent.objects.filter(action="collection.update").latest("seq")
    assert change.detail["legal_hold"] is False and change.detail["text_retention_days"] == 90


def test_the_periodic_run_expires_as_the_command_does(pipeline, hr, settings):
    from retrieval import tasks  # noqa: F401  (registers the task, as the worker does)
    from server.celery import app

    keep(hr, 30)
    old = asked("hr", days=31)
    app.tasks[settings.CELERY_BEAT_SCHEDULE["retention-expire"]["task"]].delay()  # as beat
    assert fresh(old).query == ""
    assert AuditEvent.objects.get(action="retention.expire").actor_name == "system"
    verified()
