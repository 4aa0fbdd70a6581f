"""Celery entry points: ids in, one service call each. The retention run comes from beat
(server.settings.CELERY_BEAT_SCHEDULE)."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from retrieval import evaluation
from retrieval.retention import retention_expire

HOURS = 3600


# Not retried: a second attempt would find the run taken (evaluation_run's claim). A run
# asks up to golden.MAX_QUESTIONS questions, tens of seconds each on a CPU.
@shared_task(soft_time_limit=12 * HOURS, time_limit=12 * HOURS + 60)
def evaluation_run_task(run_id: int) -> None:
    evaluation.evaluation_run(run_id=run_id)


@shared_task
def retention_expire_task() -> None:
    retention_expire()


@shared_task
def evaluations_reconcile_task() -> None:
    stale = timedelta(seconds=settings.KB_EVALUATION_STALE_SECONDS)
    evaluation.evaluations_reconcile(stale_after=stale)
