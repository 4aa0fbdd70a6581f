"""Many people asking at once: questions wait their turn for the model in order, are told
how many are ahead, and are turned away with 429, Retry-After and their passages when the
wait would pass KB_ANSWER_MAX_WAIT_SECONDS. The real local model answers; a question
holds the model's one slot, deterministically, by stopping after its first token."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache

from kb.audit import SYSTEM
from kb.models import AuditEvent, TokenScope
from kb.services import token_create
from retrieval import answer_queue, conversations, llm, services
from retrieval.local_llm import local_llms_start
from tests.conftest import REDIS_URL, dead_url, free_ports, logged_in, principal

QUESTION = "When does the staff car park open?"


@pytest.fixture
def model(docs, local_llm, llm_at, settings) -> str:
    """The local model behind the default pool, one question at a time; its line's name."""
    settings.KB_LLM_SLOTS = 1
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0  # no bound unless a test sets one
    llm_at(local_llm)
    return llm.pool_for(None).line


@contextmanager
def answering(user: User, question: str = QUESTION) -> Iterator[services.Answer]:
    """A question whose answer has begun (its first token read) and stops there, holding
    the model's slot until the block ends, as a reader who left would."""
    answer = services.question_answer(principal=principal(user), question=question)
    events = answer.events()
    assert next(events)[0] == "token"
    try:
        yield answer
    finally:
        events.close()


def post(client: Any, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def test_a_question_that_would_wait_too_long_gets_429_with_its_passages(
    model, alice, bob, settings
):
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0.001
    client = logged_in(bob)
    with answering(alice):
        for stream in (False, True):
            response = post(client, "/api/v1/ask", {"question": QUESTION, "stream": stream})
            assert response.status_code == 429
            assert int(response["Retry-After"]) >= 1
            body = response.json()
            assert body["code"] == "busy" and body["ahead"] == 1
            assert "1 question is ahead of yours" in body["message"]
            assert "car park" in body["passages"][0]["text"]
        page = logged_in(bob).post("/ask/stream", {"question": QUESTION})
        assert page.status_code == 429 and int(page["Retry-After"]) >= 1
        assert "busy" in page.json()["detail"] and page.json()["passages"]
        assert answer_queue.in_line(model) == 1  # turned away, they took no place
    refused = AuditEvent.objects.filter(action="ask", outcome="denied").last()
    assert refused is not None and refused.detail["busy"]["ahead"] == 1
    assert answer_queue.in_line(model) == 0


def test_a_waiting_question_is_told_how_many_are_ahead_and_answered_in_turn(model, alice, bob):
    with answering(alice) as first:
        # The ask page's events, and the API's.
        second = conversations.conversation_ask(user=bob, question=QUESTION, collections=None)
        assert next(second) == ("queued", {"ahead": 1})
        third = services.question_answer(principal=principal(bob), question=QUESTION).events()
        assert next(third) == ("queued", {"ahead": 2})
    assert first.text  # the first left after its first token; its slot is free
    assert next(second)[0] == "token"
    assert next(third) == ("queued", {"ahead": 1})
    second.close()
    assert next(third)[0] == "token"
    third.close()
    assert answer_queue.in_line(model) == 0


def test_the_line_is_empty_after_answers_errors_and_readers_who_leave(model, alice, bob, llm_at):
    answer = services.question_answer(principal=principal(bob), question=QUESTION)
    assert answer.complete().answer
    assert answer_queue.in_line(model) == 0

    with answering(alice):  # left while answering (the block's end)
        waiting = services.question_answer(principal=principal(bob), question=QUESTION)
        events = waiting.events()
        assert next(events) == ("queued", {"ahead": 1})
        events.close()  # left while waiting
        assert answer_queue.in_line(model) == 1
    assert answer_queue.in_line(model) == 0
    cut = AuditEvent.objects.filter(action="ask", detail__query_id=waiting.query_id).get()
    assert cut.outcome == "error" and cut.detail["error"] == "the answer was cut off"

    llm_at(dead_url())
    down = llm.pool_for(None).line
    assert services.question_answer(principal=principal(bob), question=QUESTION).unavailable
    assert answer_queue.in_line(down) == 0


def test_an_evaluations_question_waits_its_turn_where_a_persons_is_turned_away(
    model, alice, bob, settings
):
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0.001
    with answering(alice):
        with pytest.raises(services.ModelBusy):
            services.question_answer(principal=principal(bob), question=QUESTION)
        run = services.question_answer(principal=principal(bob), question=QUESTION, evaluation=7)
        events = run.events()
        assert next(events) == ("queued", {"ahead": 1})
    assert next(events)[0] == "token"
    events.close()
    asked = AuditEvent.objects.filter(action="evaluation.ask").get()
    assert asked.detail["evaluation"] == 7
    assert answer_queue.in_line(model) == 0


@pytest.fixture
def two_servers(docs, llm_at, settings) -> Iterator[llm.LlmPool]:
    """KB_LOCAL_LLM_SERVERS=2: the bundled model twice, one question at a time each."""
    settings.KB_LOCAL_LLM_SERVERS = 2
    settings.KB_LOCAL_LLM_PORT = free_ports(2)
    settings.KB_LLM_SLOTS = 1
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0
    servers = local_llms_start()
    try:
        llm_at(*(server.url for server in servers))
        yield llm.pool_for(None)
    finally:
        for server in servers:
            server.stop()


def test_with_two_bundled_servers_two_people_are_answered_at_once(
    two_servers, alice, bob, settings
):
    urls = {e.url for e in two_servers.endpoints}
    assert urls == {f"http://127.0.0.1:{settings.KB_LOCAL_LLM_PORT + n}/v1" for n in (0, 1)}
    with answering(alice):
        second = services.question_answer(principal=principal(bob), question=QUESTION).events()
        assert next(second)[0] == "token"  # not ("queued", {"ahead": 1})
        second.close()
        # The next question goes to the server that is free, whatever the turn says.
        third = services.question_answer(principal=principal(bob), question=QUESTION).events()
        assert next(third)[0] == "token"
        assert sorted(len(e.claims) for e in two_servers.endpoints) == [1, 1]
        third.close()
    assert [len(e.claims) for e in two_servers.endpoints] == [0, 0]
    assert answer_queue.in_line(two_servers.line) == 0


def test_openais_client_gets_a_rate_limit_error(model, live_server, alice, bob, hr, settings):
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0.001
    _, secret = token_create(user=bob, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    ai = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=secret, max_retries=0)
    with answering(alice), pytest.raises(openai.RateLimitError) as busy:
        ai.chat.completions.create(model="kb", messages=[{"role": "user", "content": QUESTION}])
    assert busy.value.code == "rate_limit_exceeded"
    assert int(busy.value.response.headers["Retry-After"]) >= 1
    error = busy.value.response.json()["error"]
    assert "ahead of yours" in error["message"] and error["kb_passages"]


@pytest.mark.redis
def test_the_line_is_kept_in_redis_where_every_web_process_counts_it(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0
    cache.clear()
    first, second = answer_queue.join("test", 1), answer_queue.join("test", 1)
    assert (first.waiting, second.waiting, second.ahead) == (False, True, 1)
    settings.KB_ANSWER_MAX_WAIT_SECONDS = 0.001
    with pytest.raises(answer_queue.Full) as full:
        answer_queue.join("test", 1)
    assert full.value.ahead == 2 and full.value.retry_after() >= 1
    first.leave(answered=True)
    assert list(second.wait()) == [] and not second.waiting  # its turn came
    second.leave()
    assert answer_queue.in_line("test") == 0
