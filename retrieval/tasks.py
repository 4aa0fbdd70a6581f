"""Celery entry points of retrieval, run by beat (server.settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from retrieval.retention import retention_expire


@shared_task
def retention_expire_task() -> None:
    retention_expire()
