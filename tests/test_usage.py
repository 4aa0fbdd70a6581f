"""Usage and budgets: every path that asks the model records the answer's tokens, time
to first token, model profile and cost (with the real bundled model); totals by user,
group, collection and model per day and month; who may see them (alice owns hr, bob
reads it, charlie is an outsider); token budgets refused with 429 on every path,
audited, and reset at the next day or month (explicit dates, no sleeping)."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import mcp
import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from kb.audit import SYSTEM
from kb.models import AuditEvent, Collection, ModelProfile, Role, TokenScope
from kb.principal import Principal
from kb.services import collection_create, member_add, token_create, user_create
from retrieval import mcp_server, usage
from retrieval.chat_client import Usage
from retrieval.models import AnswerUsage
from tests.conftest import dead_url, events_of, logged_in, principal

QUESTION = "When does the staff car park open?"


def post(client: Client, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json")


def mcp_ask(user: User, question: str) -> Any:
    """The MCP server's ask tool, called as `user` by the SDK's client, in process."""
    server = mcp_server.build(lambda ctx: Principal(user=user))

    async def call() -> Any:
        async with mcp.Client(server) as client:
            return await client.call_tool("ask", {"question": question})

    return anyio.run(call)


def used(
    user: User,
    collections: list[Collection],
    *,
    prompt: int,
    completion: int,
    at: datetime,
    profile: str = "default",
    cost: str = "0",
) -> AnswerUsage:
    """A recorded answer, at an explicit time."""
    row = AnswerUsage.objects.create(
        query_id=f"q{AnswerUsage.objects.count()}{int(at.timestamp())}",
        created_at=at,
        user=user,
        user_name=user.username,
        profile=profile,
        model="m",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=Decimal(cost),
    )
    row.collections.set(collections)
    return row


@pytest.fixture
def priced(docs, hr, local_llm, llm_at) -> ModelProfile:
    """hr answered by the bundled model through a profile with prices."""
    llm_at(local_llm)
    profile = ModelProfile.objects.create(
        name="local-priced",
        base_urls=local_llm,
        model="smollm2-135m",
        price_prompt_per_million=Decimal("2.5"),
        price_completion_per_million=Decimal("10"),
    )
    hr.model_profile = profile
    hr.save()
    return profile


def test_a_real_answer_records_its_tokens_first_token_time_profile_and_cost(priced, hr, bob):
    response = post(logged_in(bob), "/api/v1/ask", {"question": QUESTION, "stream": True})
    events = events_of(response)
    tokens = [data for name, data in events if name == "token"]
    done = next(data for name, data in events if name == "done")
    row = AnswerUsage.objects.get(query_id=done["query_id"])
    # llama.cpp reports no usage in a stream: each streamed piece is one token, and the
    # prompt is estimated from its characters (and marked so).
    assert row.completion_tokens == len(tokens) > 0
    assert row.prompt_estimated and row.prompt_tokens > 100
    assert row.first_token_ms is not None and 0 < row.first_token_ms < 60_000
    assert (row.profile, row.model, row.user_name) == ("local-priced", "smollm2-135m", "bob")
    assert list(row.collections.all()) == [hr]
    expected = (row.prompt_tokens * Decimal("2.5") + row.completion_tokens * 10) / 1_000_000
    assert row.cost == expected.quantize(Decimal("0.000001")) > 0
    audited = AuditEvent.objects.get(action="ask", detail__query_id=done["query_id"])
    assert audited.outcome == "ok" and audited.model == "smollm2-135m"


def test_every_path_records_usage_the_openai_endpoint_reports_the_same(priced, bob, hr):
    client = logged_in(bob)
    completion = post(
        client,
        "/v1/chat/completions",
        {"model": "kb:hr", "messages": [{"role": "user", "content": QUESTION}]},
    ).json()
    row = AnswerUsage.objects.get(query_id=completion["id"].removeprefix("chatcmpl-"))
    assert completion["usage"] == {
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
    }
    assert row.completion_tokens > 0 and row.prompt_tokens > 0
    saved = dict(events_of(client.post("/ask/stream", {"question": QUESTION})))["saved"]
    assert AnswerUsage.objects.filter(query_id=saved["query_id"], user=bob).exists()
    answered = mcp_ask(bob, QUESTION)
    assert not answered.is_error, answered
    query_id = answered.structured_content["query_id"]
    assert AnswerUsage.objects.get(query_id=query_id).completion_tokens > 0
    assert AnswerUsage.objects.count() == 3


def test_a_refusal_asks_no_model_and_records_no_usage(docs, bob, llm_at):
    llm_at(dead_url())
    response = post(
        logged_in(bob),
        "/api/v1/ask",
        {"question": "What is the boiling point of tungsten in kelvin?"},
    )
    assert response.json()["refused"] is True
    assert not AnswerUsage.objects.exists()


# Totals


@pytest.fixture
def history(hr, eng, alice, bob, charlie):
    """Answers on explicit dates: bob in the group staff, alice in none."""
    finance = collection_create(slug="finance", name="Finance", actor=SYSTEM)[0]
    member_add(collection=finance, user=charlie, role=Role.OWNER, actor=SYSTEM)
    Group.objects.create(name="staff").user_set.add(bob)
    day = datetime(2026, 11, 3, 9, tzinfo=UTC)
    used(bob, [hr], prompt=100, completion=20, at=day, profile="gpu", cost="0.5")
    used(bob, [hr], prompt=50, completion=10, at=day + timedelta(hours=5), cost="0.25")
    used(alice, [hr, eng], prompt=30, completion=5, at=day + timedelta(days=1), profile="gpu")
    used(alice, [eng], prompt=7, completion=3, at=day + timedelta(days=30))
    used(charlie, [finance], prompt=1000, completion=1000, at=day, cost="9")
    used(alice, [hr, finance], prompt=11, completion=1, at=day + timedelta(days=2))
    return {"finance": finance}


def totals(client: Client, **params: str) -> Any:
    response = client.get("/api/v1/usage", params)
    assert response.status_code == 200, response.content
    return response.json()


def rows(body: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int, float]]:
    return {
        (r["period"], r["key"]): (r["answers"], r["total_tokens"], r["cost"]) for r in body["items"]
    }


def test_an_administrator_gets_totals_by_user_group_collection_and_model(history, db):
    admin = user_create(username="root", password="x", superuser=True, actor=SYSTEM)[0]
    client = logged_in(admin)
    november = {"from": "2026-11-01", "to": "2026-11-30"}
    by_user = totals(client, group_by="user", period="day", **november)
    assert rows(by_user) == {
        ("2026-11-03", "bob"): (2, 180, 0.75),
        ("2026-11-03", "charlie"): (1, 2000, 9.0),
        ("2026-11-04", "alice"): (1, 35, 0.0),
        ("2026-11-05", "alice"): (1, 12, 0.0),
    }
    assert by_user["total"] == {
        "answers": 5,
        "prompt_tokens": 1191,
        "completion_tokens": 1036,
        "total_tokens": 2227,
        "cost": 9.75,
    }
    assert (by_user["from"], by_user["to"]) == ("2026-11-01", "2026-11-30")
    by_month = rows(totals(client, group_by="collection", period="month", **november))
    assert by_month == {
        ("2026-11", "hr"): (4, 227, 0.75),
        ("2026-11", "eng"): (1, 35, 0.0),
        ("2026-11", "finance"): (2, 2012, 9.0),
    }
    december = rows(totals(client, group_by="collection", period="month", to="2026-12-31"))
    assert december[("2026-12", "eng")] == (1, 10, 0.0)
    by_model = rows(totals(client, group_by="model", period="month", **november))
    assert by_model == {("2026-11", "gpu"): (2, 155, 0.5), ("2026-11", "default"): (3, 2072, 9.25)}
    by_group = rows(totals(client, group_by="group", period="month", **november))
    assert by_group == {
        ("2026-11", "staff"): (2, 180, 0.75),
        ("2026-11", "(no group)"): (3, 2047, 9.0),
    }


def test_usage_pages_through_a_cursor_and_refuses_bad_dates(history, db):
    admin = user_create(username="root", password="x", superuser=True, actor=SYSTEM)[0]
    client = logged_in(admin)
    first = totals(client, group_by="user", **{"from": "2026-11-01", "to": "2026-11-30"}, limit="3")
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = totals(
        client,
        group_by="user",
        **{"from": "2026-11-01", "to": "2026-11-30"},
        cursor=first["next_cursor"],
    )
    assert [r["key"] for r in rest["items"]] == ["alice"] and rest["next_cursor"] is None
    backwards = client.get("/api/v1/usage", {"from": "2026-11-30", "to": "2026-11-01"})
    assert backwards.status_code == 422 and "after" in backwards.json()["message"]
    assert client.get("/api/v1/usage", {"cursor": "nonsense"}).status_code == 400


# Who sees what


def test_an_owner_sees_only_the_collections_they_own_and_no_one_elses_rows(history, alice):
    client = logged_in(alice)
    november = {"from": "2026-11-01", "to": "2026-11-30"}
    by_collection = rows(totals(client, group_by="collection", period="month", **november))
    assert by_collection == {("2026-11", "hr"): (4, 227, 0.75)}  # not eng (editor), finance
    by_user = totals(client, group_by="user", period="month", **november)
    assert {r["key"] for r in by_user["items"]} == {"alice", "bob"}  # charlie: finance only
    assert by_user["total"]["total_tokens"] == 227
    for group_by in ("user", "group", "collection", "model"):
        body = json.dumps(totals(client, group_by=group_by, **november))
        assert "finance" not in body and "charlie" not in body and "2000" not in body
    assert client.get("/api/v1/usage", {"collection": "eng"}).status_code == 403
    assert client.get("/api/v1/usage", {"collection": "finance"}).status_code == 404
    one = rows(totals(client, collection="hr", group_by="collection", period="month", **november))
    assert one == {("2026-11", "hr"): (4, 227, 0.75)}


def test_a_reader_and_an_outsider_see_nothing(history, bob, charlie, hr):
    reader = logged_in(bob)
    refused = reader.get("/api/v1/usage")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert reader.get("/api/v1/usage", {"collection": "hr"}).status_code == 403
    assert reader.get("/usage/").status_code == 404
    outsider = User.objects.create_user("dave", password="x")
    assert logged_in(outsider).get("/api/v1/usage").status_code == 403
    assert logged_in(outsider).get("/api/v1/usage", {"collection": "hr"}).status_code == 404
    assert logged_in(outsider).get("/usage/").status_code == 404
    # charlie owns finance only: none of hr's answers.
    body = totals(logged_in(charlie), group_by="user", **{"from": "2026-11-01", "to": "2026-11-30"})
    assert {r["key"] for r in body["items"]} == {"charlie", "alice"}
    assert body["total"]["total_tokens"] == 2012


def test_a_token_sees_its_owners_usage_within_its_collections(history, alice, hr, eng):
    _, on_hr = token_create(user=alice, collections=[hr], scope=TokenScope.READ, actor=SYSTEM)
    _, on_eng = token_create(user=alice, collections=[eng], scope=TokenScope.READ, actor=SYSTEM)
    body = Client(HTTP_AUTHORIZATION=f"Bearer {on_hr}").get(
        "/api/v1/usage", {"group_by": "collection", "from": "2026-11-01", "to": "2026-11-30"}
    )
    assert body.status_code == 200 and {r["key"] for r in body.json()["items"]} == {"hr"}
    assert Client(HTTP_AUTHORIZATION=f"Bearer {on_eng}").get("/api/v1/usage").status_code == 403
    read = AuditEvent.objects.filter(action="usage.read", actor_type="token")
    assert read.count() == 1


def test_the_usage_page_shows_a_table_and_a_chart(history, alice):
    page = logged_in(alice).get(
        "/usage/",
        {"group_by": "user", "period": "day", "since": "2026-11-01", "until": "2026-11-30"},
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and html.count('class="bar"') == 30  # every day, empty ones too
    assert "<td>bob</td>" in html and "charlie" not in html and "finance" not in html
    backwards = logged_in(alice).get("/usage/", {"since": "2026-11-30", "until": "2026-11-01"})
    assert backwards.status_code == 200 and "is after" in backwards.content.decode()


# Budgets


def spent_today(user: User, collections: list[Collection], tokens: int) -> None:
    used(user, collections, prompt=tokens, completion=0, at=datetime.now(UTC))


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    return (
        datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now
    ).total_seconds()


def test_a_spent_daily_budget_is_429_on_every_path_and_audited(docs, bob, hr, settings, llm_at):
    llm_at(dead_url())
    settings.KB_BUDGET_USER_TOKENS_PER_DAY = 100
    spent_today(bob, [hr], 100)
    client = logged_in(bob)
    waits = []

    refused = post(client, "/api/v1/ask", {"question": QUESTION})
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "budget_exceeded" and body["budget"] == "user_day"
    assert "daily token budget" in body["message"] and "resets at" in body["message"]
    waits.append(int(refused["Retry-After"]))

    openai = post(
        client,
        "/v1/chat/completions",
        {"model": "kb", "messages": [{"role": "user", "content": QUESTION}]},
    )
    assert openai.status_code == 429
    error = openai.json()["error"]
    assert error["type"] == "insufficient_quota" and "daily token budget" in error["message"]
    waits.append(int(openai["Retry-After"]))

    web = client.post("/ask/stream", {"question": QUESTION})
    assert web.status_code == 429 and "daily token budget" in web.json()["detail"]
    waits.append(int(web["Retry-After"]))

    tool = mcp_ask(bob, QUESTION)
    assert tool.is_error and "daily token budget" in tool.content[0].text

    for wait in waits:
        assert abs(wait - seconds_to_midnight()) < 60
    denied = AuditEvent.objects.filter(action="ask", outcome="denied", detail__budget="user_day")
    assert denied.count() == 4
    first = denied.first()
    assert first is not None and (first.detail["limit"], first.detail["used"]) == (100, 100)
    # Passages are not budgeted.
    assert post(client, "/api/v1/search", {"query": "car park"}).status_code == 200


def test_under_the_budget_the_question_goes_to_the_model(docs, bob, hr, settings, llm_at):
    llm_at(dead_url())  # 503: the budget let it through to the model
    settings.KB_BUDGET_USER_TOKENS_PER_DAY = 100
    spent_today(bob, [hr], 99)
    used(bob, [hr], prompt=500, completion=0, at=datetime.now(UTC) - timedelta(days=1))
    assert post(logged_in(bob), "/api/v1/ask", {"question": QUESTION}).status_code == 503
    assert AnswerUsage.objects.count() == 2  # a model that never answered costs nothing


def test_a_spent_collection_budget_names_the_collection(docs, bob, alice, hr, settings, llm_at):
    llm_at(dead_url())
    settings.KB_BUDGET_COLLECTION_TOKENS_PER_MONTH = 1_000_000
    hr.budget_tokens_per_month = 50  # its own, lower than the setting
    hr.save()
    spent_today(alice, [hr], 50)  # alice's answers spend hr's budget for bob too
    refused = post(logged_in(bob), "/api/v1/ask", {"question": QUESTION})
    assert refused.status_code == 429
    body = refused.json()
    assert body["budget"] == "collection_month" and "'hr'" in body["message"]
    now = datetime.now(UTC)
    month_end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    assert abs(int(refused["Retry-After"]) - (month_end - now).total_seconds()) < 60
    assert (
        AuditEvent.objects.filter(outcome="denied", detail__budget="collection_month").count() == 1
    )
    hr.budget_tokens_per_month = 0  # unlimited, whatever the setting says
    hr.save()
    assert post(logged_in(bob), "/api/v1/ask", {"question": QUESTION}).status_code == 503


def test_a_refused_question_is_not_budgeted(docs, bob, hr, settings, llm_at):
    llm_at(dead_url())
    settings.KB_BUDGET_COLLECTION_TOKENS_PER_MONTH = 10
    spent_today(bob, [hr], 10)
    answer = post(
        logged_in(bob),
        "/api/v1/ask",
        {"question": "What is the boiling point of tungsten in kelvin?"},
    )
    assert answer.status_code == 200 and answer.json()["refused"] is True


def test_budgets_reset_at_the_next_utc_day_and_month(hr, bob, settings):
    settings.KB_BUDGET_USER_TOKENS_PER_DAY = 100
    settings.KB_BUDGET_COLLECTION_TOKENS_PER_MONTH = 1000
    used(bob, [hr], prompt=1000, completion=0, at=datetime(2026, 12, 31, 22, tzinfo=UTC))
    who = principal(bob)
    evening = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    with pytest.raises(usage.BudgetExceeded) as day:
        usage.user_budget_check(who, now=evening)
    assert day.value.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert day.value.retry_after(evening) == 30 * 60
    with pytest.raises(usage.BudgetExceeded) as month:
        usage.collections_budget_check([hr], now=evening)
    assert month.value.resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    usage.user_budget_check(who, now=new_year)
    usage.collections_budget_check([hr], now=new_year)
    # Mid-month, the month's budget still counts the first day's tokens.
    used(bob, [hr], prompt=1000, completion=0, at=datetime(2027, 2, 1, tzinfo=UTC))
    with pytest.raises(usage.BudgetExceeded) as february:
        usage.collections_budget_check([hr], now=datetime(2027, 2, 28, 23, tzinfo=UTC))
    assert february.value.resets_at == datetime(2027, 3, 1, tzinfo=UTC)
    usage.user_budget_check(who, now=datetime(2027, 2, 2, tzinfo=UTC))


def test_default_dates_are_the_last_30_days_or_12_months():
    assert usage.usage_range("day", None, date(2026, 3, 1)) == (date(2026, 1, 31), date(2026, 3, 1))
    assert usage.usage_range("month", None, date(2026, 3, 15)) == (
        date(2025, 4, 1),
        date(2026, 3, 15),
    )
    assert usage.usage_range("month", None, date(2026, 12, 1)) == (
        date(2026, 1, 1),
        date(2026, 12, 1),
    )
    months = usage.periods_between("month", date(2025, 11, 5), date(2026, 2, 1))
    assert months == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert usage.periods_between("day", date(2026, 2, 28), date(2026, 3, 1)) == [
        "2026-02-28",
        "2026-03-01",
    ]
    with pytest.raises(ValueError, match="after"):
        usage.usage_range("day", date(2026, 2, 1), date(2026, 1, 1))


def test_the_default_model_is_priced_by_the_settings(settings):
    settings.LLM_PRICE_PROMPT_PER_MILLION = 0.5
    settings.LLM_PRICE_COMPLETION_PER_MILLION = 1.5
    assert usage.usage_cost(None, Usage(2_000_000, 1_000_000)) == Decimal("2.5")
