"""Celery entry points: ids in, one service call each. Retried on transient errors."""

from collections.abc import Callable
from typing import Any

from celery import Task
from django.db import OperationalError

from ingest import services
from kb.celery import app

TRANSIENT = (OperationalError, ConnectionError, TimeoutError)


class VersionTask(Task[Any, Any]):
    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Out of retries, or a bug: the document says so instead of hanging in its stage.
        services.mark_failed(args[0], f"processing failed: {type(exc).__name__}: {exc}")


# Pipeline tasks: retried with jittered backoff on transient errors, then failed visibly.
RETRY_POLICY: dict[str, Any] = {
    "base": VersionTask,
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 5,
}
version_task: Callable[[Callable[[int], None]], Task[Any, Any]] = app.task(**RETRY_POLICY)


@version_task
def version_parse_task(version_id: int) -> None:
    services.version_parse(version_id=version_id)


@app.task(bind=True, **RETRY_POLICY)
def version_embed_task(self: Task[Any, Any], version_id: int) -> None:
    # A retry embeds its version alone, so one failing version cannot fail the others: a
    # first failure of any kind is retried, since a companion may have caused it.
    first = self.request.retries == 0
    try:
        services.version_embed(version_id=version_id, companions=first)
    except TRANSIENT:
        raise
    except Exception as error:
        if not first:
            raise
        raise self.retry(exc=error, countdown=1) from error


@app.task
def ingest_reconcile_task() -> None:
    from datetime import timedelta

    from django.conf import settings

    services.ingest_reconcile(stale_after=timedelta(seconds=settings.KB_STALE_AFTER_SECONDS))
