"""What the serving process starts beside the web app, by runtime shape.

Without LLM_BASE_URL it starts the bundled small model's server beside it.
Embedded default (no QDRANT_URL): this process is the one owner of the vector engine,
so it opens it, runs the background worker in threads, re-queues whatever a previous
run left unfinished, and keeps reconciling. Production: workers are separate processes
(`celery -A kb worker`, with `celery -A kb beat` reconciling); the web starts nothing.
"""

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class Runtime:
    parts: list[Stoppable] = field(default_factory=list)

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()


class _Reconciler:
    """Re-queues work whose message was lost, every third of the staleness period."""

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kb-reconcile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ingest.services import ingest_reconcile

        stale = timedelta(seconds=settings.KB_STALE_AFTER_SECONDS)
        while not self._stopped.wait(max(stale.total_seconds() / 3, 10)):
            try:
                ingest_reconcile(stale_after=stale)
            except Exception:
                logger.exception("reconcile failed; retrying next period")

    def stop(self) -> None:
        self._stopped.set()


class _VectorStore:
    def stop(self) -> None:
        from ingest.vectors import vector_store_close

        vector_store_close()


def runtime_start() -> Runtime:
    runtime = Runtime()
    if settings.KB_LOCAL_LLM:
        from retrieval.local_llm import LocalLlm

        try:
            runtime.parts.append(LocalLlm(settings.KB_LOCAL_LLM_PORT))
        except RuntimeError:
            # Search still works; questions answer 503 and say why.
            logger.exception("the local model did not start")
    if not settings.KB_INPROCESS_WORKER:
        return runtime
    from ingest.services import ingest_reconcile
    from ingest.vectors import vector_store
    from kb.worker import worker_start

    vector_store()  # take ownership now: a second server on the same data fails here
    runtime.parts.append(_VectorStore())
    # This process is the only worker, so all unfinished work is orphaned; re-queued
    # before the worker starts, so that no claim of its own is voided.
    requeued = ingest_reconcile()
    if requeued:
        logger.info("re-queued %d unfinished documents", requeued)
    runtime.parts.append(worker_start())
    runtime.parts.append(_Reconciler())
    return runtime
