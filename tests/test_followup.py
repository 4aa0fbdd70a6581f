"""Follow-up questions retrieve: made standalone before the search, on the real engine
and model, and the audit row keeps what was searched."""

import json
from typing import Any

import pytest
from django.db import connection

from kb.audit import SYSTEM, audit_verify
from kb.models import AuditEvent
from kb.services import user_create
from retrieval import followup, llm, services
from retrieval.search import passages_search
from tests.conftest import add, dead_url, logged_in, principal

FIRST = "How much notice must employees give before they resign?"
FOLLOWUP = "And contractors?"
HISTORY = [
    {"role": "user", "content": FIRST},
    {"role": "assistant", "content": "Four weeks of notice [1]."},
]


@pytest.fixture
def policies(pipeline, hr) -> dict[str, Any]:
    return {
        "notice": add(
            hr,
            "notice-periods.txt",
            "Notice periods. Employees who resign give four weeks of notice to their "
            "manager. Contractors give one week of notice to the agency.",
        ),
        "badges": add(
            hr,
            "contractor-badges.txt",
            "Contractors. Contractors collect a contractor badge at reception. Contractors "
            "return contractor badges each evening; contractors may not enter the lab.",
        ),
        "holiday": add(
            hr,
            "holiday.txt",
            "Holiday policy. Employees receive twenty-eight days of paid holiday a year.",
        ),
    }


def test_questions_that_lean_on_the_conversation_are_told_apart():
    for question in ("And contractors?", "what about weekends?", "Can they carry it over?"):
        assert followup.is_followup(question), question
    assert not followup.is_followup("How do I reset my VPN password at home?")
    rewrite = followup.standalone_query(question=FOLLOWUP, history=HISTORY, pool=None)
    assert rewrite == followup.Rewrite("much notice employees resign And contractors?", "terms")
    # A question that stands alone, or one with no conversation before it, is searched as is.
    alone = "How do I reset my VPN password at home?"
    assert followup.standalone_query(question=alone, history=HISTORY, pool=None).how == ""
    assert followup.standalone_query(question=FOLLOWUP, history=[], pool=None).how == ""


def test_a_chain_of_follow_ups_keeps_the_topic_it_started_from():
    history = [
        {"role": "user", "content": "What is FedRAMP?"},
        {"role": "user", "content": "Who needs it?"},
    ]
    rewrite = followup.standalone_query(question="And contractors?", history=history, pool=None)
    assert rewrite.query == "fedramp And contractors?"


def test_the_models_rewrite_is_used_only_when_it_carries_the_topic_and_the_follow_up():
    check = followup._checked
    good = "How much notice must contractors give before they resign?"
    assert check(f"Rewritten question: {good}\nmore", FOLLOWUP, [FIRST]) == good
    assert check("", FOLLOWUP, [FIRST]) == ""
    assert check(FIRST, FOLLOWUP, [FIRST]) == ""  # an echo drops "contractors"
    assert check("What do contractors do?", FOLLOWUP, [FIRST]) == ""  # the topic is lost
    assert check("notice contractors " * 40, FOLLOWUP, [FIRST]) == ""  # too long


def test_the_follow_up_alone_misses_and_rewritten_finds_the_passage(policies, hr):
    alone = passages_search(query=FOLLOWUP, collections=[hr]).passages
    assert alone[0].document_id != policies["notice"].pk
    rewrite = followup.standalone_query(question=FOLLOWUP, history=HISTORY, pool=None)
    found = passages_search(query=rewrite.query, collections=[hr]).passages
    assert found[0].document_id == policies["notice"].pk


def test_ask_searches_the_standalone_follow_up_and_audits_it(policies, bob, llm_at):
    llm_at(dead_url())  # no model to rewrite: the earlier question's terms are carried
    response = logged_in(bob).post(
        "/api/v1/ask",
        json.dumps({"question": FOLLOWUP, "history": HISTORY}),
        content_type="application/json",
    )
    assert response.status_code == 503  # nor to answer; the passages still come back
    assert response.json()["passages"][0]["document_id"] == policies["notice"].pk
    event = AuditEvent.objects.filter(action="ask").latest("seq")
    assert event.query == FOLLOWUP
    assert event.rewritten_query == "much notice employees resign And contractors?"
    assert event.detail["rewritten_by"] == "terms"
    root = user_create(username="root", password="x" * 12, superuser=True, actor=SYSTEM)[0]
    shown = logged_in(root).get(f"/audit/{event.seq}").content.decode()
    assert "Searched as" in shown and event.rewritten_query in shown
    assert audit_verify().ok


def test_the_rewritten_query_is_covered_by_the_rows_hash(policies, bob, llm_at):
    llm_at(dead_url())
    services.question_answer(principal=principal(bob), question=FOLLOWUP, history=HISTORY)
    assert audit_verify().ok
    event = AuditEvent.objects.filter(action="ask").latest("seq")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE kb_auditevent SET rewritten_query = %s WHERE id = %s",
            ["something else", event.pk],
        )
    verdict = audit_verify()
    assert not verdict.ok and f"row seq {event.seq}" in verdict.message


def test_a_model_that_is_slow_to_rewrite_leaves_it_to_the_terms(
    policies, bob, local_llm, llm_at, settings
):
    llm_at(local_llm)
    settings.KB_REWRITE_SECONDS = 0.01  # far below what the real model needs
    answer = services.question_answer(principal=principal(bob), question=FOLLOWUP, history=HISTORY)
    assert answer.rewrite.how == "terms"
    assert answer.passages[0].document_id == policies["notice"].pk
    assert all(e.down_until == 0 for e in llm.pool_for(None).endpoints)  # not marked down
    answer.complete()
    assert AuditEvent.objects.filter(action="ask").latest("seq").outcome == "ok"


def test_the_bundled_model_rewrites_or_the_terms_do(policies, bob, local_llm, llm_at, settings):
    llm_at(local_llm)
    settings.KB_REWRITE_SECONDS = 60
    answer = services.question_answer(principal=principal(bob), question=FOLLOWUP, history=HISTORY)
    answer.complete()
    event = AuditEvent.objects.filter(action="ask").latest("seq")
    assert event.detail["rewritten_by"] in ("model", "terms")
    assert event.rewritten_query == answer.rewrite.query and "contractors" in answer.rewrite.query
    assert answer.passages[0].document_id == policies["notice"].pk
    assert audit_verify().ok
