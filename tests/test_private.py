"""Private questions: answered as usual, kept out of conversations, never out of the
audit trail; KB_PRIVATE_AUDIT_TEXTS=false keeps their texts out of the row only."""

import json
from typing import Any

from kb.audit import audit_verify
from kb.models import AuditEvent
from retrieval.models import Conversation, Exchange
from tests.conftest import dead_url, events_of, logged_in

QUESTION = "When does the staff car park open?"


def ask(client: Any, question: str, **fields: object) -> list[tuple[str, Any]]:
    return events_of(client.post("/ask/stream", {"question": question, **fields}))


def api_ask(client: Any, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/ask", json.dumps(body), content_type="application/json")


def last_ask() -> AuditEvent:
    return AuditEvent.objects.filter(action="ask").latest("seq")


def test_private_question_keeps_no_conversation_but_its_audit_row(docs, bob, local_llm, llm_at):
    llm_at(local_llm)
    client = logged_in(bob)
    events = ask(client, QUESTION, collections=["hr"], private="on")
    names = [name for name, _ in events]
    assert names[0] == "token" and names[-3:] == ["citations", "done", "private"]
    assert "saved" not in names
    assert not Conversation.objects.exists() and not Exchange.objects.exists()
    # Nowhere to be seen again: not in the sidebar, not through the API.
    assert "car park" not in client.get("/").content.decode()
    assert client.get("/api/v1/conversations").json()["items"] == []
    # The audit row is whole, and says it was private.
    done = dict(events)["done"]
    event = last_ask()
    assert event.detail["query_id"] == dict(events)["private"]["query_id"] == done["query_id"]
    assert event.detail["private"] is True and "texts_withheld" not in event.detail
    assert event.query == QUESTION and event.answer == done["answer"] and event.answer
    assert event.actor_name == "bob" and event.collections == "hr" and event.outcome == "ok"
    # No exchange to rate.
    feedback = client.post(f"/answers/{done['query_id']}/feedback", {"rating": "up"})
    assert feedback.status_code == 404


def test_metadata_only_keeps_the_texts_out_and_the_chain_verifies(
    docs, bob, local_llm, llm_at, settings
):
    settings.KB_PRIVATE_AUDIT_TEXTS = False
    llm_at(local_llm)
    events = ask(logged_in(bob), QUESTION, collections=["hr"], private="on")
    cited = [c["chunk_id"] for c in dict(events)["citations"]]
    assert cited and dict(events)["done"]["answer"]  # the asker still got the answer
    event = last_ask()
    assert event.query == "" and event.answer == "" and event.rewritten_query == ""
    assert event.detail["private"] is True and event.detail["texts_withheld"] is True
    # The rest is all there: who, when, collections, outcome, passages returned and cited.
    assert event.actor_name == "bob" and event.actor_type == "user" and event.created_at
    assert event.collections == "hr" and event.outcome == "ok" and event.model
    assert event.chunk_ids and event.cited_chunk_ids == cited
    assert not Conversation.objects.exists()
    result = audit_verify()
    assert result.ok, result.message


def test_metadata_only_applies_to_private_questions_only(docs, bob, llm_at, settings):
    settings.KB_PRIVATE_AUDIT_TEXTS = False
    llm_at(dead_url())
    events = dict(ask(logged_in(bob), "How many days of paid holiday?"))
    # A question not marked private is kept, and audited with its texts, as before.
    assert Exchange.objects.get(query_id=events["saved"]["query_id"])
    event = last_ask()
    assert event.query == "How many days of paid holiday?" and "private" not in event.detail


def test_denied_private_question_is_audited_without_its_text(docs, charlie, settings):
    settings.KB_PRIVATE_AUDIT_TEXTS = False
    response = logged_in(charlie).post(
        "/ask/stream", {"question": "Salary of alice?", "collections": ["hr"], "private": "on"}
    )
    assert response.status_code == 404
    event = AuditEvent.objects.get(action="ask", outcome="denied")
    assert event.query == "" and event.detail["private"] is True
    assert event.detail["requested"] == ["hr"] and event.actor_name == "charlie"


def test_api_private_marks_the_row_and_keeps_its_texts_out(docs, bob, llm_at, settings):
    llm_at(dead_url())
    client = logged_in(bob)
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "At 7."}]
    asked = api_ask(client, {"question": "And where is it?", "history": history, "private": True})
    assert asked.status_code == 503  # no model; the passages still come back
    event = last_ask()
    assert event.detail["private"] is True and event.query == "And where is it?"
    assert event.rewritten_query  # a follow-up: what was searched is kept too
    settings.KB_PRIVATE_AUDIT_TEXTS = False
    api_ask(client, {"question": "And where is it?", "history": history, "private": True})
    event = last_ask()
    assert event.detail["texts_withheld"] is True and event.chunk_ids
    assert event.query == "" and event.rewritten_query == "" and event.answer == ""
    assert not Conversation.objects.exists()
    assert audit_verify().ok
    invalid = api_ask(client, {"question": "x", "private": "maybe"})
    assert invalid.status_code == 422
