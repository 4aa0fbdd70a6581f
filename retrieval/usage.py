"""Usage and budgets: what each answer cost, totals for the people who may see them, and
the token budgets checked before the model is asked.

- `usage_record` writes one AnswerUsage row per answer that asked the model, inside the
  transaction of the answer's audit row (retrieval.services.Answer).
- `budget_check` refuses a question when the user's tokens today, or a collection's
  this month, have reached the budget (KB_BUDGET_USER_TOKENS_PER_DAY,
  KB_BUDGET_COLLECTION_TOKENS_PER_MONTH, or the collection's own). Days and months are
  UTC; a budget resets at the next one.
- `usage_totals` adds rows up by user, group, collection or model (profile), per day or
  month, within what the principal may see: administrators everything, a collection's
  owners that collection.

Prices are per million prompt and completion tokens, on the model profile (the settings'
LLM_PRICE_* for the default model). A GPU hour is not a price kb can split between
answers on its own; an operator who rents GPUs by the hour divides the hour's price by
the tokens an hour serves (bench/ measures tokens/s) and enters that.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from django.conf import settings
from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncMonth
from django.utils import timezone

from kb.audit import audit_record
from kb.models import Collection, ModelProfile, Role
from kb.principal import Principal
from kb.selectors import ReadOnlyAccess, collection_get, collection_roles
from retrieval.chat_client import Usage
from retrieval.models import AnswerUsage

GroupBy = Literal["user", "group", "collection", "model"]
Period = Literal["day", "month"]
MILLION = Decimal(1_000_000)
NO_GROUP = "(no group)"
EARLIEST, LATEST = date(2000, 1, 1), date(9998, 12, 31)


def _tokens(rows: "QuerySet[AnswerUsage]") -> int:
    total = rows.aggregate(n=Coalesce(Sum(F("prompt_tokens") + F("completion_tokens")), 0))
    return int(total["n"])


def usage_cost(profile: ModelProfile | None, usage: Usage) -> Decimal:
    if profile is not None:
        prompt, completion = profile.price_prompt_per_million, profile.price_completion_per_million
    else:
        prompt = Decimal(str(settings.LLM_PRICE_PROMPT_PER_MILLION))
        completion = Decimal(str(settings.LLM_PRICE_COMPLETION_PER_MILLION))
    cost = (usage.prompt_tokens * prompt + usage.completion_tokens * completion) / MILLION
    return cost.quantize(Decimal("0.000001"))


def usage_record(
    *,
    query_id: str,
    principal: Principal,
    collections: Iterable[Collection],
    profile: ModelProfile | None,
    model: str,
    usage: Usage,
    prompt_estimated: bool,
    first_token_ms: int | None,
) -> AnswerUsage:
    row = AnswerUsage.objects.create(
        query_id=query_id,
        created_at=timezone.now(),
        user=principal.user,
        user_name=principal.user.get_username(),
        profile=profile.name if profile else "default",
        model=model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        prompt_estimated=prompt_estimated,
        first_token_ms=first_token_ms,
        cost=usage_cost(profile, usage),
    )
    row.collections.set(list(collections))
    return row


def estimated_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A prompt's tokens when the server does not say: about four characters a token,
    OpenAI's rule of thumb for English text."""
    return math.ceil(sum(len(m.get("content", "")) for m in messages) / 4)


# Budgets.


@dataclass
class BudgetExceeded(Exception):
    """A question refused because a token budget is spent; `message` says which budget
    and when it resets."""

    budget: Literal["user_day", "collection_month"]
    limit: int
    used: int
    resets_at: datetime
    message: str

    def retry_after(self, now: datetime | None = None) -> int:
        """Seconds until the budget resets (Retry-After)."""
        return max(1, math.ceil((self.resets_at - (now or timezone.now())).total_seconds()))

    def detail(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "limit": self.limit,
            "used": self.used,
            "resets_at": self.resets_at.isoformat(),
        }

    def __str__(self) -> str:
        return self.message


def _day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)


def _month_start(now: datetime) -> datetime:
    return _day_start(now).replace(day=1)


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def collection_budget(collection: Collection) -> int:
    """Tokens a month (0: unlimited): the collection's own, else the setting."""
    if collection.budget_tokens_per_month is not None:
        return collection.budget_tokens_per_month
    return int(settings.KB_BUDGET_COLLECTION_TOKENS_PER_MONTH)


def user_budget_check(principal: Principal, *, now: datetime | None = None) -> None:
    """Raises BudgetExceeded when the user's tokens today reached their daily budget."""
    limit = int(settings.KB_BUDGET_USER_TOKENS_PER_DAY)
    if not limit:
        return
    start = _day_start(now or timezone.now())
    used = _tokens(AnswerUsage.objects.filter(user=principal.user, created_at__gte=start))
    if used >= limit:
        resets = start + timedelta(days=1)
        raise BudgetExceeded(
            "user_day",
            limit,
            used,
            resets,
            f"Your daily token budget is spent ({used:,} of {limit:,} tokens today); "
            f"it resets at {resets:%Y-%m-%d %H:%M} UTC.",
        )


def collections_budget_check(
    collections: Iterable[Collection], *, now: datetime | None = None
) -> None:
    """Raises BudgetExceeded for the first collection whose tokens this month reached its
    monthly budget."""
    start = _month_start(now or timezone.now())
    for collection in collections:
        limit = collection_budget(collection)
        if not limit:
            continue
        used = _tokens(AnswerUsage.objects.filter(collections=collection, created_at__gte=start))
        if used >= limit:
            resets = _next_month(start)
            raise BudgetExceeded(
                "collection_month",
                limit,
                used,
                resets,
                f"The collection {collection.slug!r} has spent its monthly token budget "
                f"({used:,} of {limit:,} tokens this month); it resets at "
                f"{resets:%Y-%m-%d %H:%M} UTC.",
            )


# Reading usage.


def usage_visible(principal: Principal, slug: str | None = None) -> set[int] | None:
    """The collections whose usage the principal may see: None for all (an administrator
    in a session). Owners see the collections they own; a token narrows that to its
    collections (its read or write cap does not apply: this is the owner's own report).
    With `slug`: that collection only; Http404 when it may not be read, ReadOnlyAccess
    when it is read but not owned. ReadOnlyAccess too when nothing may be seen."""
    if slug is not None:
        collection, _ = collection_get(principal, slug)
        if collection.pk not in _owned(principal):
            raise ReadOnlyAccess(f"You need the owner role in {slug} to see its usage.")
        return {collection.pk}
    if principal.is_admin and principal.token is None:
        return None
    owned = _owned(principal)
    if not owned:
        raise ReadOnlyAccess("Usage is shown to administrators and to collection owners.")
    return owned


def _owned(principal: Principal) -> set[int]:
    roles = collection_roles(Principal(user=principal.user))
    owned = {pk for pk, role in roles.items() if role == Role.OWNER}
    token = principal.token
    if token is not None:
        owned &= set(token.collections.values_list("pk", flat=True))
    return owned


def usage_may_see(principal: Principal) -> bool:
    try:
        usage_visible(principal)
    except ReadOnlyAccess:
        return False
    return True


@dataclass(frozen=True)
class UsageTotal:
    period: str  # 2026-12-05, or 2026-12 by month
    key: str  # the user, group, collection or model profile
    answers: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "key": self.key,
            "answers": self.answers,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": float(self.cost),
        }


def usage_range(period: Period, since: date | None, until: date | None) -> tuple[date, date]:
    """The dates asked for (both included); by default the last 30 days, or the last 12
    months. Raises ValueError when `since` is after `until`."""
    until = until or timezone.now().astimezone(UTC).date()
    if since is None and period == "day":
        since = until - timedelta(days=29)
    elif since is None:
        months = until.year * 12 + until.month - 1 - 11
        since = date(months // 12, months % 12 + 1, 1)
    if since > until:
        raise ValueError(f"from ({since}) is after to ({until})")
    if since < EARLIEST or until > LATEST:
        raise ValueError(f"dates go from {EARLIEST} to {LATEST}")
    return since, until


def periods_between(period: Period, since: date, until: date) -> list[str]:
    """Every day (2026-12-05) or month (2026-12) from `since` to `until`, in order."""
    if period == "day":
        return [str(since + timedelta(days=n)) for n in range((until - since).days + 1)]
    first, last = since.year * 12 + since.month - 1, until.year * 12 + until.month - 1
    return [f"{n // 12:04d}-{n % 12 + 1:02d}" for n in range(first, last + 1)]


def usage_totals(
    *,
    visible: set[int] | None,
    group_by: GroupBy,
    period: Period,
    since: date,
    until: date,
) -> list[UsageTotal]:
    """Totals by period and key, in that order, over the rows from `since` to `until`
    (both included) of the collections in `visible` (None: all)."""
    rows = AnswerUsage.objects.filter(
        created_at__gte=datetime.combine(since, time(), tzinfo=UTC),
        created_at__lt=datetime.combine(until + timedelta(days=1), time(), tzinfo=UTC),
    )
    if visible is not None:
        rows = rows.filter(
            pk__in=AnswerUsage.collections.through.objects.filter(collection_id__in=visible).values(
                "answerusage_id"
            )
        )
    key = {
        "user": F("user_name"),
        "group": F("user__groups__name"),
        "collection": F("collections__slug"),
        "model": F("profile"),
    }[group_by]
    if group_by == "collection":
        # A row per collection of the answer (one join, which the key below reuses):
        # only those the reader may see.
        if visible is None:
            rows = rows.filter(collections__isnull=False)
        else:
            rows = rows.filter(collections__in=visible)
    trunc = TruncDay if period == "day" else TruncMonth
    grouped = (
        rows.annotate(bucket=trunc("created_at", tzinfo=UTC), key=key)
        .values("bucket", "key")
        .annotate(
            answers=Count("pk"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            spent=Sum("cost"),
        )
    )
    shape = "%Y-%m-%d" if period == "day" else "%Y-%m"
    totals = [
        UsageTotal(
            period=row["bucket"].astimezone(UTC).strftime(shape),
            key=row["key"] if row["key"] is not None else NO_GROUP,
            answers=row["answers"],
            prompt_tokens=row["prompt"] or 0,
            completion_tokens=row["completion"] or 0,
            cost=row["spent"] or Decimal(0),
        )
        for row in grouped
    ]
    return sorted(totals, key=lambda t: (t.period, t.key))


def usage_sum(totals: Sequence[UsageTotal]) -> dict[str, Any]:
    """All of `totals` added up. (By group or collection an answer counts once for each
    of its user's groups or its collections.)"""
    return {
        "answers": sum(t.answers for t in totals),
        "prompt_tokens": sum(t.prompt_tokens for t in totals),
        "completion_tokens": sum(t.completion_tokens for t in totals),
        "total_tokens": sum(t.total_tokens for t in totals),
        "cost": float(sum((t.cost for t in totals), Decimal(0))),
    }


@dataclass(frozen=True)
class UsageReport:
    group_by: GroupBy
    period: Period
    since: date
    until: date
    totals: list[UsageTotal]


def usage_report(
    *,
    principal: Principal,
    group_by: GroupBy,
    period: Period,
    since: date | None = None,
    until: date | None = None,
    collection: str | None = None,
) -> UsageReport:
    """The totals the principal may see, audited as read. Raises Http404 or
    ReadOnlyAccess (usage_visible), ValueError for dates out of order or range."""
    visible = usage_visible(principal, collection)
    since, until = usage_range(period, since, until)
    audit_record(
        action="usage.read",
        actor=principal,
        collections=[collection] if collection else [],
        detail={"group_by": group_by, "period": period, "from": str(since), "to": str(until)},
    )
    totals = usage_totals(
        visible=visible, group_by=group_by, period=period, since=since, until=until
    )
    return UsageReport(group_by, period, since, until, totals)
