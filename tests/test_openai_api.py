"""The official `openai` client, unchanged but for base_url and api_key, against kb's
/v1 endpoints over HTTP: models, chat (streamed and not) with citations, vector stores."""

import re

import openai
import pytest

from kb.audit import SYSTEM
from kb.models import AuditEvent, TokenScope
from kb.services import collection_create, token_create
from tests.conftest import PARKING

QUESTION = "When does the staff car park open?"


@pytest.fixture
def ai(live_server, audit_head, hr, bob):
    collection_create(slug="finance", name="Finance", actor=SYSTEM)  # bob may not read it
    _, secret = token_create(user=bob, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=secret, max_retries=0)


def test_models_are_kb_and_each_readable_collection(ai):
    assert [m.id for m in ai.models.list()] == ["kb", "kb:hr"]


def test_chat_answers_with_markers_annotations_kb_citations_and_usage(docs, ai, local_llm, llm_at):
    llm_at(local_llm)
    completion = ai.chat.completions.create(
        model="kb:hr", messages=[{"role": "user", "content": QUESTION}], temperature=0.3
    )
    choice = completion.choices[0]
    text = choice.message.content or ""
    annotations = choice.message.annotations or []
    assert annotations, text
    for annotation in annotations:
        cited = annotation.url_citation
        assert re.fullmatch(r"\[\d+\]", text[cited.start_index : cited.end_index])
        assert cited.title == "parking" and "/passages/" in cited.url
    (first, *_) = (choice.model_extra or {})["kb_citations"]
    assert first["document_id"] == docs["parking"].pk and first["quote"] in PARKING
    usage = completion.usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    event = AuditEvent.objects.filter(action="ask").last()
    assert event is not None and event.actor_type == "token" and event.answer == text


def test_chat_streams_tokens_then_citations_on_the_last_choice(docs, ai, local_llm, llm_at):
    llm_at(local_llm)
    chunks = list(
        ai.chat.completions.create(
            model="kb",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = next(c for c in reversed(chunks) if c.choices)
    assert last.choices[0].finish_reason == "stop" and text.strip()
    kb_citations = (last.choices[0].model_extra or {})["kb_citations"]
    assert kb_citations and kb_citations[0]["document_id"] == docs["parking"].pk
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_unsupported_or_unknown_is_refused_in_openais_shape(docs, ai):
    with pytest.raises(openai.BadRequestError) as refused:
        ai.chat.completions.create(
            model="kb",
            messages=[{"role": "user", "content": QUESTION}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert refused.value.param == "tools"
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="kb", messages=[{"role": "user", "content": "x"}], n=2)
    for model in ("kb:finance", "kb:nowhere", "gpt-4o"):
        with pytest.raises(openai.NotFoundError):
            ai.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])


def test_the_model_down_is_a_503_in_openais_shape(docs, ai, llm_at):
    from tests.conftest import dead_url

    llm_at(dead_url())
    with pytest.raises(openai.InternalServerError) as down:
        ai.chat.completions.create(model="kb", messages=[{"role": "user", "content": QUESTION}])
    assert "127.0.0.1" not in str(down.value)


def test_vector_store_search_answers_within_the_callers_scope(docs, ai):
    assert [s.id for s in ai.vector_stores.list()] == ["hr"]
    page = ai.vector_stores.search("hr", query="car park opening hours", max_num_results=3)
    results = list(page)
    assert results and results[0].filename == "parking"
    assert "car park" in results[0].content[0].text
    only_holiday = ai.vector_stores.search(
        "hr",
        query="car park",
        filters={"type": "eq", "key": "document_id", "value": str(docs["holiday"].pk)},
    )
    assert {r.file_id for r in only_holiday} <= {str(docs["holiday"].pk)}
    with pytest.raises(openai.NotFoundError):
        ai.vector_stores.search("finance", query="merger")
    assert AuditEvent.objects.filter(action="search", outcome="denied").exists()
