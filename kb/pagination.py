"""Lists in pages: `limit` rows after an opaque `cursor`, and the cursor of the next page.

Keyset pages (the rows after the last one seen, in a stable order), so a page costs the
same deep in a long list and a row added meanwhile is neither skipped nor repeated. The
cursor is the last row's sort key, encoded; a caller treats it as opaque.
"""

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from ninja.errors import HttpError
from ninja.params.functions import Query

M = TypeVar("M", bound=Model)
T = TypeVar("T")
# The two query parameters of every list.
Limit = Annotated[int, Query(50, ge=1, le=500)]
Cursor = Annotated[str | None, Query(None, max_length=1000)]


def page(
    rows: QuerySet[M], *, order: Sequence[str], limit: int, cursor: str | None
) -> tuple[list[M], str | None]:
    """(rows of this page, next cursor or None). `order`: field names, "-" for descending,
    the last one unique (the primary key)."""
    if cursor:
        try:
            rows = rows.filter(_after(order, _decode(cursor, len(order))))
        except (ValueError, TypeError, ValidationError):  # a value of the wrong type
            raise _invalid() from None
    found = list(rows.order_by(*order)[: limit + 1])
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], _encode([_value(last, field.lstrip("-")) for field in order])


def _after(order: Sequence[str], values: list[Any]) -> Q:
    """Rows that sort after `values`: (a > x) or (a = x and b > y) ..."""
    condition = Q()
    equal: dict[str, Any] = {}
    for field, value in zip(order, values, strict=True):
        name = field.lstrip("-")
        beyond = f"{name}__lt" if field.startswith("-") else f"{name}__gt"
        condition |= Q(**equal, **{beyond: value})
        equal[name] = value
    return condition


def _value(row: Model, name: str) -> Any:
    value = getattr(row, name)
    return value.isoformat() if hasattr(value, "isoformat") else value


def _encode(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode(cursor: str, size: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise _invalid()
    return values


def _invalid() -> HttpError:
    return HttpError(400, "The cursor is not valid: pass back a next_cursor as it came.")


def page_items(
    items: Sequence[T],
    *,
    key: Callable[[T], list[Any]],
    width: int,
    limit: int,
    cursor: str | None,
) -> tuple[list[T], str | None]:
    """The same pages over rows already made in memory (totals, say), sorted by `key`
    (`width` values, together unique): the rows after the cursor's key."""
    rows = list(items)
    if cursor:
        last = _decode(cursor, width)
        try:
            rows = [row for row in rows if key(row) > last]
        except TypeError:  # a cursor's value of another type
            raise _invalid() from None
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], _encode(key(rows[limit - 1]))
