"""Nobody ever sees a passage from a collection they may not read, by any path."""

import io
import json
from typing import Any

import pytest
from django.test import Client

from ingest.models import Chunk
from ingest.services import document_upload
from ingest.vectors.base import Scope
from kb.audit import SYSTEM
from kb.models import AuditEvent, Role, TokenScope
from kb.services import collection_create, member_add, token_create
from retrieval import services
from tests.conftest import dead_url, logged_in, principal

SECRET = "Confidential: the merger with Globex closes on the ninth of June for 41 million."
PUBLIC = "The merger of the two cafeterias closes the east kitchen in June."


@pytest.fixture
def worlds(pipeline, hr, alice, bob):
    """hr (bob reads it) holds a public text; finance (alice alone) holds the secret."""
    finance = collection_create(slug="finance", name="Finance", actor=SYSTEM)[0]
    member_add(collection=finance, user=alice, role=Role.OWNER, actor=SYSTEM)
    for collection, name, text in ((hr, "cafe.txt", PUBLIC), (finance, "merger.txt", SECRET)):
        document_upload(
            collection=collection, actor=SYSTEM, path=name, stream=io.BytesIO(text.encode())
        )
    secret_chunks = list(Chunk.objects.filter(collection_id=finance.pk))
    assert secret_chunks
    return finance, secret_chunks


def post(client: Client, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def test_search_never_returns_secret_passages(worlds, bob, charlie):
    _, secret = worlds
    for client in (logged_in(bob), logged_in(charlie)):
        for body in (
            {"query": "merger Globex closes June"},
            {"query": "merger Globex", "filters": {"document_ids": [secret[0].document_id]}},
            {"query": "Globex", "mode": "sparse", "top_k": 100},
            {"query": "Globex", "mode": "dense", "top_k": 100},
        ):
            response = post(client, "/api/v1/search", body)
            assert response.status_code == 200
            assert "Globex" not in response.content.decode()
        named = post(
            client, "/api/v1/search", {"query": "Globex", "collections": ["hr", "finance"]}
        )
        assert named.status_code == 404


def test_vector_query_carries_only_permitted_collections(worlds, bob, hr, monkeypatch):
    from ingest.vectors.edge import EdgeStore

    seen: list[Scope] = []
    real = EdgeStore.search

    def spy(self, **kwargs):
        seen.append(kwargs["scope"])
        return real(self, **kwargs)

    monkeypatch.setattr(EdgeStore, "search", spy)
    services.search_run(principal=principal(bob), query="merger")
    assert seen and all(list(scope.collection_ids) == [hr.pk] for scope in seen)


def test_answers_never_draw_on_secret_passages(worlds, bob, llm_at):
    _, secret = worlds
    llm_at(dead_url())  # the model is not needed to see what would be sent to it
    answer = services.question_answer(
        principal=principal(bob), question="When does the Globex merger close?"
    )
    assert all(p.collection == "hr" for p in answer.passages)
    if not answer.unavailable:  # refused: the events write the row
        list(answer.events())
    events = AuditEvent.objects.filter(action="ask")
    assert events.exists()
    for event in events:
        assert not set(event.chunk_ids) & {c.pk for c in secret}
        assert "finance" not in event.collections.split()


def test_token_limited_to_hr_cannot_reach_finance_even_for_its_owner(worlds, alice, hr):
    _, raw = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert (
        "Globex" not in post(client, "/api/v1/search", {"query": "Globex merger"}).content.decode()
    )
    assert (
        post(client, "/api/v1/search", {"query": "x", "collections": ["finance"]}).status_code
        == 404
    )
    assert client.get("/api/v1/collections/finance/documents").status_code == 404
    finance_document = Chunk.objects.filter(collection_id=worlds[0].pk).first()
    assert finance_document is not None
    document_id = finance_document.document_id
    assert client.get(f"/api/v1/documents/{document_id}/content").status_code == 404
    # The owner herself, by session, does see it: the filter is the token's.
    assert (
        "Globex"
        in post(logged_in(alice), "/api/v1/search", {"query": "Globex merger"}).content.decode()
    )


def test_passage_and_file_of_a_secret_are_404(worlds, bob, charlie):
    _, secret = worlds
    for user in (bob, charlie):
        client = logged_in(user)
        assert client.get(f"/passages/{secret[0].pk}").status_code == 404
        assert client.get(f"/documents/{secret[0].document_id}/download").status_code == 404
        assert client.get(f"/api/v1/documents/{secret[0].document_id}").status_code == 404
        content = client.get(f"/api/v1/documents/{secret[0].document_id}/content")
        assert content.status_code == 404 and b"Globex" not in content.content
        assert client.get("/api/v1/collections/finance/documents").status_code == 404


def test_a_removed_member_no_longer_reads_past_answers_from_that_collection(worlds, bob):
    from kb.audit import audit_record
    from kb.services import member_remove
    from retrieval.models import Conversation, Exchange

    finance, secret_chunks = worlds
    member_add(collection=finance, user=bob, role=Role.READER, actor=SYSTEM)
    conversation = Conversation.objects.create(user=bob, title="merger")
    chunk = secret_chunks[0]
    cited = {"n": 1, "chunk_id": chunk.pk, "collection_id": finance.pk, "quote": "x"}
    cited |= {"url": f"/passages/{chunk.pk}", "document_title": "merger", "page": None}
    Exchange.objects.create(
        conversation=conversation, query_id="q1", question="When?", answer=SECRET, citations=[cited]
    )
    # An answer that cites nothing, from sources its audit row names.
    Exchange.objects.create(
        conversation=conversation, query_id="q2", question="How much?", answer="41 million."
    )
    audit_record(  # as the question's own row is written: by the asker
        action="ask",
        actor=principal(bob),
        chunk_ids=[c.pk for c in secret_chunks],
        detail={"query_id": "q2"},
    )
    client = logged_in(bob)
    page = client.get(f"/conversations/{conversation.pk}").content.decode()
    assert "ninth of June" in page and "41 million." in page
    member_remove(collection=finance, user=bob, actor=SYSTEM)
    page = client.get(f"/conversations/{conversation.pk}").content.decode()
    assert "ninth of June" not in page and "41 million" not in page
    assert page.count("documents you may no longer read") == 2
    from retrieval.conversations import _history

    assert [t["role"] for t in _history(conversation)] == ["user", "user"]


def test_the_openai_paths_never_show_secret_passages(worlds, bob, charlie, llm_at):
    llm_at(dead_url())
    for client in (logged_in(bob), logged_in(charlie)):
        models = client.get("/v1/models").content.decode()
        assert "finance" not in models
        stores = client.get("/v1/vector_stores").content.decode()
        assert "finance" not in stores
        search = post(client, "/v1/vector_stores/finance/search", {"query": "Globex"})
        assert search.status_code == 404 and "Globex" not in search.content.decode()
        readable = post(client, "/v1/vector_stores/hr/search", {"query": "Globex merger"})
        assert "41 million" not in readable.content.decode()
        chat = post(
            client,
            "/v1/chat/completions",
            {"model": "kb:finance", "messages": [{"role": "user", "content": "Globex?"}]},
        )
        assert chat.status_code == 404 and "Globex" not in chat.content.decode()


def _reads_hr(client: Client) -> list[int]:
    """Status codes of the read paths: collections, search, a passage, the OpenAI models."""
    return [
        client.get("/api/v1/collections/hr").status_code,
        post(client, "/api/v1/search", {"query": "merger", "collections": ["hr"]}).status_code,
        client.get("/v1/models").status_code,
    ]


def _deactivated_by(how: str, user, settings) -> None:
    from kb.directory import user_deactivate

    if how == "service":
        user_deactivate(user=user, actor=SYSTEM)
        return
    # The identity provider over SCIM: the user it provisioned, turned off by PATCH.
    settings.KB_SCIM_TOKEN = "t" * 40
    scim = Client(HTTP_AUTHORIZATION=f"Bearer {settings.KB_SCIM_TOKEN}")
    operations = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
    }
    response = scim.patch(
        f"/scim/v2/Users/{user.scim.scim_id}",
        json.dumps(operations),
        content_type="application/scim+json",
    )
    assert response.status_code in (200, 204), response.content


@pytest.mark.parametrize("how", ["service", "scim"])
def test_a_deactivated_users_session_and_token_are_refused_on_the_next_request(
    worlds, hr, alice, charlie, settings, how
):
    from django.contrib.auth.models import User

    from kb.directory import SCIM_ACTOR, UserFields, user_activate, user_provision

    dana = user_provision(fields=UserFields(username="dana"), actor=SCIM_ACTOR).user
    member_add(collection=hr, user=dana, role=Role.READER, actor=SYSTEM)
    _, secret = token_create(user=dana, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    session = logged_in(dana)
    token = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    bystanders = [logged_in(alice), logged_in(charlie)]
    assert _reads_hr(session) == _reads_hr(token) == [200, 200, 200]

    _deactivated_by(how, User.objects.get(pk=dana.pk), settings)

    assert _reads_hr(session) == [401, 401, 401]
    assert _reads_hr(token) == [401, 401, 401]
    assert session.get("/collections/").status_code == 302  # to the login page
    assert "Globex" not in session.get("/search?q=merger").content.decode()
    # Turned on again, they log in afresh: the old session and token stay dead.
    user_activate(user=User.objects.get(pk=dana.pk), actor=SYSTEM)
    assert _reads_hr(session) == _reads_hr(token) == [401, 401, 401]
    # The others were not touched.
    assert [c.get("/api/v1/collections").status_code for c in bystanders] == [200, 200]
