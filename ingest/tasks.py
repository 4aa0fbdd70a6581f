"""Celery entry points: ids in, one service call each. Retried on transient errors."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import OperationalError

from ingest import pipeline

TRANSIENT = (OperationalError, ConnectionError, TimeoutError)


class VersionTask(Task[Any, Any]):
    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Out of retries, or a bug: the document says so instead of hanging in its stage.
        pipeline.version_fail(args[0], f"processing failed: {type(exc).__name__}: {exc}")


# Pipeline tasks: retried with jittered backoff on transient errors, then failed visibly.
TRANSIENT_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 5,
}
RETRY_POLICY: dict[str, Any] = {"base": VersionTask, **TRANSIENT_RETRY}
version_task: Callable[[Callable[[int], None]], Task[Any, Any]] = shared_task(**RETRY_POLICY)
batch_task: Callable[[Callable[[list[int]], None]], Task[Any, Any]] = shared_task(**TRANSIENT_RETRY)


@version_task
def version_parse_task(version_id: int) -> None:
    pipeline.version_parse(version_id=version_id)


@batch_task
def versions_parse_task(version_ids: list[int]) -> None:
    # The versions of one upload batch. Past the retries of a transient error, or on a
    # bug, the ones it claimed are left in their stage: ingest_reconcile re-queues them.
    pipeline.versions_parse(version_ids=version_ids)


@shared_task(bind=True, **RETRY_POLICY)
def version_embed_task(self: Task[Any, Any], version_id: int) -> None:
    # A retry embeds its version alone, so one failing version cannot fail the others: a
    # first failure of any kind is retried, since a companion may have caused it.
    first = self.request.retries == 0
    try:
        pipeline.version_embed(version_id=version_id, companions=first)
    except TRANSIENT:
        raise
    except Exception as error:
        if not first:
            raise
        raise self.retry(exc=error, countdown=1) from error


@batch_task
def versions_embed_task(version_ids: list[int]) -> None:
    # The versions of one parse batch. A failure puts each back in the queue on its own
    # (version_embed_task), so here only a transient error is retried; past the retries,
    # ingest_reconcile finds them unclaimed.
    pipeline.versions_embed(version_ids=version_ids)


@shared_task
def ingest_reconcile_task() -> None:
    pipeline.ingest_reconcile(stale_after=timedelta(seconds=settings.KB_STALE_AFTER_SECONDS))
