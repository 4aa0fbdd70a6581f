"""The web pages, through Django's test client with the real stack behind them: log in,
collections, upload, members, settings, tokens, conversations, search, audit, status."""

import io
import json
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from ingest.models import Document
from kb.audit import SYSTEM
from kb.models import ApiToken, AuditEvent, Membership, ModelProfile, Role
from kb.services import user_create
from retrieval.models import Conversation, Exchange, Feedback
from tests.conftest import add, dead_url, events_of, logged_in


@pytest.fixture
def root(db):
    return user_create(username="root", password="x" * 12, superuser=True, actor=SYSTEM)[0]


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


def streamed(client: Client, path: str) -> Any:
    response: Any = client.get(path)
    return response.streaming_content


def ask(client: Client, question: str, **fields: object):
    return client.post("/ask/stream", {"question": question, **fields})


# Logging in


def test_pages_need_a_login(db):
    for path in ("/", "/search", "/collections/", "/tokens/", "/audit/", "/status/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_login_is_audited_and_rate_limited(bob, settings):
    settings.KB_LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(3):
        page = client.post("/login/", {"username": "bob", "password": "wrong"})
        assert page.status_code == 200 and b"correct username and password" in page.content
    assert AuditEvent.objects.filter(action="auth.login_failed", actor_name="bob").count() == 3
    # Now even the right password is not checked until the window ends.
    blocked = client.post("/login/", {"username": "bob", "password": "bob-pass-123"})
    assert blocked.status_code == 429 and b"Too many failed attempts" in blocked.content
    assert AuditEvent.objects.filter(action="auth.login_throttled", outcome="denied").exists()
    # A wrong password while throttled is not checked either: one row, the refusal.
    before = AuditEvent.objects.count()
    client.post("/login/", {"username": "bob", "password": "wrong"})
    assert list(AuditEvent.objects.filter(seq__gt=before).values_list("action", flat=True)) == [
        "auth.login_throttled"
    ]
    cache.clear()
    ok = client.post("/login/", {"username": "bob", "password": "bob-pass-123"})
    assert ok.status_code == 302 and ok["Location"] == "/"
    assert AuditEvent.objects.filter(action="auth.login", actor_name="bob").exists()
    # The admin's login form is the same, rate-limited one.
    assert b"Log in to kb" in Client().get("/admin/login/").content


def test_session_cookie_is_httponly_and_lax(bob):
    response = Client().post("/login/", {"username": "bob", "password": "bob-pass-123"})
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


def test_forms_need_the_csrf_token(hr, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/collections/hr/members", {"kind": "user", "name": "x", "role": 1})
    assert response.status_code == 403
    assert client.post("/ask/stream", {"question": "hi"}).status_code == 403


# Collections and documents


def test_outsider_sees_no_collection_nor_its_pages(docs, hr, charlie):
    client = logged_in(charlie)
    assert b"Human resources" not in client.get("/collections/").content
    assert b"Human resources" not in client.get("/").content
    document = docs["parking"]
    chunk = document.chunks.first()
    for path in (
        "/collections/hr/",
        "/collections/hr/documents",
        "/collections/hr/members",
        "/collections/hr/settings",
        f"/documents/{document.pk}/delete",
        f"/passages/{chunk.pk}",
        f"/documents/{document.pk}/download",
        "/search?q=parking&collections=hr",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post("/collections/hr/upload", {"file": io.BytesIO(b"x")}).status_code == 404
    found = client.get("/search?q=car+park").content
    assert b"0 passages" in found and b"Parking policy" not in found


def test_reader_sees_documents_but_cannot_change_them(docs, hr, bob):
    client = logged_in(bob)
    page = client.get("/collections/hr/")
    assert page.status_code == 200 and b"parking" in page.content
    assert b"Add documents" not in page.content and b"Delete" not in page.content
    for path in ("/collections/hr/members", "/collections/hr/settings"):
        assert client.get(path).status_code == 403
    denied = client.get(f"/documents/{docs['parking'].pk}/delete")
    assert denied.status_code == 403 and b"editor role" in denied.content.lower()


def test_upload_page_takes_many_files_and_escapes_names(pipeline, hr, alice):
    client = logged_in(alice)
    files = [
        ('"><img src=x onerror=alert(1)>.txt', b"The canteen opens at noon."),
        ("rules.md", b"# Rules\n\nBikes go in the basement."),
        ("empty.txt", b""),
    ]
    uploads = [io.BytesIO(content) for _, content in files]
    for upload, (name, _) in zip(uploads, files, strict=True):
        upload.name = name
    response = client.post(
        "/collections/hr/upload", {"file": uploads}, headers={"Accept": "application/json"}
    )
    results = response.json()["results"]
    assert [r["error"] for r in results] == ["", "", ""] and all(r["id"] for r in results)
    table = client.get("/collections/hr/documents").content.decode()
    assert "<img src=x" not in table and "&lt;img src=x onerror=alert(1)&gt;" in table
    assert table.count('class="status status-ready"') == 2
    # The empty file failed on its own, with a message a person can act on.
    assert table.count('class="status status-failed"') == 1 and "the file is empty" in table


def test_delete_and_reingest_ask_first(docs, hr, alice):
    client = logged_in(alice)
    document = docs["parking"]
    confirm = client.get(f"/documents/{document.pk}/delete")
    assert confirm.status_code == 200 and b"cannot be undone" in confirm.content
    assert Document.objects.filter(pk=document.pk).exists()
    assert client.post(f"/documents/{document.pk}/reingest").status_code == 302
    assert document.versions.count() == 2
    assert client.post(f"/documents/{document.pk}/delete").status_code == 302
    assert not Document.objects.filter(pk=document.pk).exists()


def test_admin_creates_a_collection_others_cannot(root, alice):
    response = logged_in(root).post("/collections/", {"slug": "legal", "name": "Legal"})
    assert response.status_code == 302 and response["Location"] == "/collections/legal/"
    assert AuditEvent.objects.filter(action="collection.create", collections="legal").exists()
    assert logged_in(alice).post("/collections/", {"slug": "x", "name": "X"}).status_code == 404


# Members and settings


def test_owner_manages_members(hr, alice, bob, charlie):
    client = logged_in(alice)
    client.post("/collections/hr/members", {"kind": "user", "name": "charlie", "role": 2})
    assert Membership.objects.get(collection=hr, user=charlie).role == Role.EDITOR
    unknown = client.post("/collections/hr/members", {"kind": "user", "name": "zed", "role": 1})
    assert b"There is no user called zed" in unknown.content
    membership = Membership.objects.get(collection=hr, user=charlie)
    client.post(f"/collections/hr/members/{membership.pk}/remove")
    assert not Membership.objects.filter(collection=hr, user=charlie).exists()
    assert AuditEvent.objects.filter(action="member.remove", collections="hr").exists()


def test_owner_changes_settings_and_sensitive_needs_a_local_model(hr, alice):
    remote = ModelProfile.objects.create(
        name="remote", base_urls="http://10.0.0.9/v1", model="m", is_local=False
    )
    client = logged_in(alice)
    form = {"name": "HR", "description": "People", "system_prompt": "Be brief."}
    assert client.post("/collections/hr/settings", form).status_code == 302
    hr.refresh_from_db()
    assert hr.system_prompt == "Be brief." and hr.name == "HR"
    refused = client.post(
        "/collections/hr/settings", {**form, "sensitive": "on", "model_profile": remote.pk}
    )
    assert b"may only use a local model profile" in refused.content
    hr.refresh_from_db()
    assert not hr.sensitive and hr.model_profile is None


# Tokens


def test_token_is_shown_once_works_and_can_be_revoked(docs, hr, eng, bob):
    client = logged_in(bob)
    page = client.post(
        "/tokens/", {"name": "wiki", "collections": ["hr"], "scope": "read", "expires_in_days": 30}
    )
    assert page["Cache-Control"] == "no-store"
    secret = page.context["secret"]
    assert secret.startswith("kb_") and secret in page.content.decode()
    assert secret not in client.get("/tokens/").content.decode()
    api = Client(headers={"Authorization": f"Bearer {secret}"})
    found = api.post("/api/v1/search", {"query": "car park"}, content_type="application/json")
    assert found.status_code == 200 and found.json()["results"]
    # Bob cannot read eng, so it is not even a choice.
    refused = client.post("/tokens/", {"collections": ["eng"], "scope": "read"})
    assert b"is not one of the available choices" in refused.content
    token = ApiToken.objects.get(user=bob)
    client.post(f"/tokens/{token.pk}/revoke")
    assert (
        api.post("/api/v1/search", {"query": "x"}, content_type="application/json").status_code
        == 401
    )


# Asking in conversations


def test_ask_streams_a_cited_answer_and_keeps_the_conversation(docs, bob, local_llm, llm_at):
    llm_at(local_llm)
    client = logged_in(bob)
    events = events_of(ask(client, "When does the staff car park open?", collections=["hr"]))
    names = [name for name, _ in events]
    assert names[0] == "token" and names[-3:] == ["citations", "done", "saved"]
    citations = dict(events)["citations"]
    assert citations and citations[0]["url"].startswith("/passages/")
    saved = dict(events)["saved"]
    exchange = Exchange.objects.get(query_id=saved["query_id"])
    assert exchange.answer == dict(events)["done"]["answer"] and exchange.citations == citations
    # The conversation page shows it again, with [n] as links to the passages.
    page = client.get(f"/conversations/{saved['conversation_id']}").content.decode()
    assert f'href="{citations[0]["url"]}"' in page and "car park" in page
    # A follow-up goes into the same conversation.
    follow = events_of(ask(client, "And where is it?", conversation=saved["conversation_id"]))
    assert dict(follow)["saved"]["conversation_id"] == saved["conversation_id"]
    assert Conversation.objects.get().exchanges.count() == 2


def test_conversations_are_private(docs, bob, alice, llm_at):
    llm_at(dead_url())
    events = events_of(ask(logged_in(bob), "How many days of paid holiday?"))
    conversation = dict(events)["saved"]["conversation_id"]
    assert logged_in(alice).get(f"/conversations/{conversation}").status_code == 404
    other = logged_in(alice).post("/ask/stream", {"question": "x", "conversation": conversation})
    assert other.status_code == 404
    assert b"paid holiday" not in logged_in(alice).get("/").content


def test_model_down_shows_the_passages(docs, bob, llm_at):
    llm_at(dead_url())
    events = dict(events_of(ask(logged_in(bob), "How many days of paid holiday?")))
    assert "unavailable" in events["unavailable"]["detail"]
    assert any("holiday" in p["text"] for p in events["passages"])
    assert AuditEvent.objects.filter(action="ask").latest("seq").outcome == "error"


def test_refused_answer_says_so_and_shows_the_closest_passages(docs, bob, llm_at):
    llm_at(dead_url())
    events = dict(events_of(ask(logged_in(bob), "Boiling point of tungsten in kelvin?")))
    assert events["done"]["refused"] is True and events["passages"]


def test_unreadable_collection_is_404_on_the_ask_page(docs, charlie):
    response = ask(logged_in(charlie), "car park?", collections=["hr"])
    assert response.status_code == 404
    assert AuditEvent.objects.filter(action="ask", outcome="denied").exists()


def test_feedback_is_stored_and_linked_to_the_audit_row(docs, bob, alice, llm_at):
    llm_at(dead_url())
    query_id = dict(events_of(ask(logged_in(bob), "How many days of paid holiday?")))["saved"][
        "query_id"
    ]
    response = logged_in(bob).post(
        f"/answers/{query_id}/feedback",
        {"rating": "down", "comment": "no answer"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    assert Feedback.objects.get().rating == "down"
    assert (
        logged_in(alice).post(f"/answers/{query_id}/feedback", {"rating": "up"}).status_code == 404
    )
    given = AuditEvent.objects.get(action="feedback")
    assert given.detail["query_id"] == query_id and given.detail["rating"] == "down"


# Search


def test_search_page_highlights_terms_and_escapes_text(pipeline, hr, bob):
    add(hr, "evil.txt", "Parking rules <script>alert(1)</script> for the parking garage.")
    page = logged_in(bob).get("/search?q=parking+garage").content.decode()
    assert "<mark>garage</mark>" in page and "<mark>Parking</mark>" in page
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert AuditEvent.objects.filter(action="search", query="parking garage").exists()


# For administrators


def test_audit_trail_filters_opens_exports_and_checks(docs, bob, root, llm_at):
    llm_at(dead_url())
    query_id = dict(events_of(ask(logged_in(bob), "How many days of paid holiday?")))["saved"][
        "query_id"
    ]
    logged_in(bob).post(f"/answers/{query_id}/feedback", {"rating": "up", "comment": "great"})
    client = logged_in(root)
    page = client.get("/audit/?action=ask&user=bob")
    assert page.status_code == 200 and b"paid holiday" in page.content
    event = AuditEvent.objects.filter(action="ask").latest("seq")
    row = client.get(f"/audit/{event.seq}").content.decode()
    assert "How many days of paid holiday?" in row and "great" in row
    assert f'href="/passages/{event.chunk_ids[0]}"' in row
    exported = b"".join(streamed(client, "/audit/export?action=ask&format=jsonl"))
    rows = [json.loads(line) for line in exported.splitlines()]
    assert [r["action"] for r in rows] == ["ask"] and rows[0]["query"].startswith("How many")
    csv = b"".join(streamed(client, "/audit/export?user=bob&format=csv")).decode()
    assert csv.splitlines()[0].startswith("id,seq,") and "ask" in csv
    assert AuditEvent.objects.filter(action="audit.export").count() == 2
    checked = client.get("/audit/?verify=1").content.decode()
    assert "audit chain intact" in checked


def test_admin_pages_are_404_for_everyone_else(docs, alice):
    client = logged_in(alice)
    for path in ("/audit/", "/audit/1", "/audit/export", "/status/"):
        assert client.get(path).status_code == 404, path


def test_status_page_shows_every_part(docs, root, local_llm, llm_at):
    dead = dead_url()
    llm_at(local_llm, dead)
    page = logged_in(root).get("/status/").content.decode()
    assert "Qdrant" in page and "vectors" in page
    assert f"Model {local_llm}" in page and "smollm2" in page.lower()
    assert f"Model {dead}" in page and "unreachable" in page
    assert "ready" in page  # documents by status
