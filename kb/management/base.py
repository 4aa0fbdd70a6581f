"""What every kb command shares: an audit actor, and bad input as a one-line error."""

import getpass
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from kb import request_context
from kb.audit import Actor
from kb.models import Collection


def require_migrated() -> None:
    """One line instead of a traceback on a database that was never migrated (or is
    behind the code)."""
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise CommandError(
            "the database is not set up for this version of kb: run `python manage.py "
            "migrate` first"
        )


class KbCommand(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> str | None:
        require_migrated()
        info = request_context.RequestInfo(
            user_agent=f"manage.py {self.__module__.rsplit('.', 1)[-1]}",
            request_id=uuid.uuid4().hex,
        )
        with request_context.using(info):
            try:
                return super().execute(*args, **options)
            except ValidationError as error:
                raise CommandError("; ".join(error.messages)) from None

    @property
    def actor(self) -> Actor:
        return Actor(type="system", id=None, name=f"cli:{getpass.getuser()}")


def get_user(name: str) -> User:
    try:
        return User.objects.get(username=name)
    except User.DoesNotExist:
        raise CommandError(f"no user named {name!r}") from None


def get_group(name: str) -> Group:
    try:
        return Group.objects.get(name=name)
    except Group.DoesNotExist:
        raise CommandError(f"no group named {name!r}") from None


def get_collection(slug: str) -> Collection:
    try:
        return Collection.objects.get(slug=slug)
    except Collection.DoesNotExist:
        raise CommandError(f"no collection {slug!r}") from None


_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str) -> datetime:
    """`30d`, `12h`, `2w`, `45m`, or a date or date-time."""
    if match := _DURATION.match(text.strip()):
        amount, unit = match.groups()
        return timezone.now() + timedelta(**{_UNITS[unit]: int(amount)})
    return parse_when(text)


def parse_when(text: str) -> datetime:
    """An ISO date (midnight UTC) or date-time; naive times are UTC."""
    value = parse_datetime(text)
    if value is None and (day := parse_date(text)) is not None:
        value = datetime(day.year, day.month, day.day)
    if value is None:
        raise CommandError(f"not a date or date-time: {text!r} (use e.g. 2026-01-31)")
    if timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
