"""REST: GET /api/v1/usage, token totals and cost (mounted by server.api).

Administrators see every answer; a collection's owners see the answers that drew on it.
Reading usage is itself audited."""

from datetime import date
from typing import Annotated

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from kb.api_auth import principal_of
from kb.pagination import Cursor, Limit, page_items
from retrieval import usage

router = Router(tags=["usage"])


class UsageRow(Schema):
    period: str = Field(..., description="The day (2026-12-05) or month (2026-12), UTC")
    key: str = Field(..., description="The user, group, collection or model profile")
    answers: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float = Field(..., description="In the currency of the model profiles' prices")


class UsageSum(Schema):
    answers: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float


class UsagePage(Schema):
    group_by: usage.GroupBy
    period: usage.Period
    since: date = Field(..., alias="from")
    until: date = Field(..., alias="to")
    total: UsageSum = Field(..., description="Over every page")
    items: list[UsageRow]
    next_cursor: str | None


@router.get("/usage", response=UsagePage, by_alias=True)
def usage_list(
    request: HttpRequest,
    group_by: usage.GroupBy = "collection",
    period: usage.Period = "day",
    since: Annotated[date | None, Query(None, alias="from")] = None,
    until: Annotated[date | None, Query(None, alias="to")] = None,
    collection: Annotated[str | None, Query(None, max_length=63)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> UsagePage:
    """Tokens and cost of the answers by `group_by` per `period`, from `from` to `to`
    (dates, both included; by default the last 30 days, or 12 months). Administrators
    see all; an owner sees the collections they own (`collection`: one of them)."""
    try:
        report = usage.usage_report(
            principal=principal_of(request),
            group_by=group_by,
            period=period,
            since=since,
            until=until,
            collection=collection,
        )
    except ValueError as error:
        raise ValidationError(str(error)) from None
    items, next_cursor = page_items(
        report.totals, key=lambda t: [t.period, t.key], width=2, limit=limit, cursor=cursor
    )
    return UsagePage.model_validate(
        {
            "group_by": group_by,
            "period": period,
            "from": report.since,
            "to": report.until,
            "total": usage.usage_sum(report.totals),
            "items": [t.as_dict() for t in items],
            "next_cursor": next_cursor,
        }
    )
