"""The Celery app, configured from the CELERY_* names in server.settings.

The database is the source of truth for work to do: the broker only wakes workers,
so a lost message delays work and never loses it (see ingest's reconciler).
"""

import os
from typing import Any

from celery import Celery
from celery.signals import task_failure

from kb import metrics
from server import broker  # noqa: F401  (registers folder://, the embedded default's broker)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

app = Celery("kb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_failure.connect
def _count_failure(**_: Any) -> None:
    metrics.ERRORS.labels("task").inc()
