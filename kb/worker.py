"""A Celery worker inside the current process: the embedded default's background work.

The embedded vector engine admits one process, so the process that serves the web
also runs the worker, in a thread (`celery.worker.WorkController` with the threads
pool; not `app.Worker`, which installs signal handlers). `ingest_folder` uses the same
worker when no server owns the data folder.
"""

import logging
import socket
import threading
from dataclasses import dataclass

from celery.worker import WorkController
from django.conf import settings

from kb.celery import app

logger = logging.getLogger(__name__)
QUEUES = ("ingest", "embed")
_started: list["InProcessWorker"] = []


@dataclass
class InProcessWorker:
    name: str
    controller: WorkController
    thread: threading.Thread

    def stop(self, timeout: float = 30) -> None:
        # Tasks still running are abandoned; the reconciler picks them up next start.
        self.controller.stop(in_sighandler=False, exitcode=0)
        self.thread.join(timeout)


def worker_start(*, name: str = "embedded") -> InProcessWorker:
    hostname = f"{name}@{socket.gethostname()}"
    controller = WorkController(
        app=app,
        hostname=hostname,
        pool_cls="threads",
        concurrency=settings.KB_WORKER_CONCURRENCY,
        queues=list(QUEUES),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="INFO",
    )
    thread = threading.Thread(target=controller.start, name="kb-worker", daemon=True)
    thread.start()
    _started.append(worker := InProcessWorker(hostname, controller, thread))
    logger.info("background worker started in this process (queues %s)", ", ".join(QUEUES))
    return worker


def inprocess_workers_alive() -> list[str]:
    """Names of the workers running in this process (the embedded default's)."""
    return [w.name for w in _started if w.thread.is_alive()]
