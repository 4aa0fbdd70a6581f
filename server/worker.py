"""A Celery worker inside the current process: the embedded default's background work.

The embedded vector engine admits one process, so the process that serves the web
also runs the worker, in a thread (`celery.worker.WorkController` with the threads
pool; not `app.Worker`, which installs signal handlers). `ingest_folder` uses the same
worker when no server owns the data folder.

Each queue gets its own consumer thread: parsing is pure Python and holds the GIL while
embedding runs in native code, so one of each keeps both cores busy, where two parses
at once would share one core and two embeddings would queue on the same cores. An
evaluation run mostly waits on the model: on its own thread, uploads meanwhile are
parsed and embedded as usual.
"""

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery.platforms import EX_OK
from celery.worker import WorkController
from celery.worker import state as worker_state
from django.conf import settings

from server.celery import app

logger = logging.getLogger(__name__)
QUEUES = ("ingest", "embed", "evaluate")
# Messages each consumer holds ahead of its thread. kombu's virtual transports (the
# folder broker) check for new messages only every polling interval once the prefetch
# is taken, so with one message held, each task of a few milliseconds waited up to 50 ms
# for the next: 10,000 small files went at 13 files/s (bench/ingest_many.py). Holding
# more loses nothing: the database, not the broker, says what is left to do, and a new
# owner queues it again.
PREFETCH = 16
_started: list["InProcessWorker"] = []


@dataclass
class InProcessWorker:
    name: str
    controllers: list[WorkController] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> None:
        """Each consumer stops itself, from its own thread, at its loop's next turn (a
        second at most), then waits for its running tasks, as Celery's warm shutdown
        does: callers close the vector store next. kombu's connections are not
        thread-safe; closing one from here while its loop read the socket hung both
        (seen). The flag is Celery's, for the whole process, so it stays up until every
        consumer has seen it."""
        worker_state.should_stop = EX_OK  # type: ignore[assignment]  # typed None there
        try:
            for thread in self.threads:
                thread.join()
        finally:
            worker_state.should_stop = None

    def alive(self) -> bool:
        return bool(self.threads) and all(t.is_alive() for t in self.threads)


def _consuming(controller: WorkController, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 30
    while getattr(getattr(controller, "consumer", None), "task_consumer", None) is None:
        if not thread.is_alive():
            raise RuntimeError("the in-process worker stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError("the in-process worker did not start consuming within 30 s")
        time.sleep(0.01)


def worker_start(*, name: str = "embedded") -> InProcessWorker:
    """One consumer thread per queue. Celery's queue selection is global to the app and
    read when a consumer starts, so each is started in turn; then all queues are
    selected again, so a consumer that reconnects later serves all (no work is missed)."""
    hostname = f"{name}@{socket.gethostname()}"
    worker = InProcessWorker(hostname)
    # No remote control: the status page asks these threads directly, and two consumers'
    # broadcast subscriptions in one process could leave one blocked reading the other's
    # socket on the way out (seen, with Redis).
    app.conf.worker_enable_remote_control = False
    for queue in QUEUES:
        controller = WorkController(
            app=app,
            hostname=f"{name}-{queue}@{socket.gethostname()}",
            pool_cls="threads",
            concurrency=settings.KB_WORKER_CONCURRENCY,
            prefetch_multiplier=PREFETCH,
            queues=[queue],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        )
        thread = threading.Thread(target=controller.start, name=f"kb-{queue}", daemon=True)
        thread.start()
        worker.controllers.append(controller)
        worker.threads.append(thread)
        _consuming(controller, thread)
    app.amqp.queues.select(list(QUEUES))
    _started.append(worker)
    logger.info("background workers started in this process (queues %s)", ", ".join(QUEUES))
    return worker


def queues_purge() -> int:
    """Drops the messages waiting in this worker's queues, and says how many. Only for the
    embedded default's one worker, before it starts: the database says what is unfinished
    (ingest_reconcile queues it again), and each message a killed owner left would be
    read, found done, and dropped, one by one, ahead of the new work."""
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's virtual channel, or Redis's
        return sum(int(channel.queue_purge(queue) or 0) for queue in QUEUES)


def inprocess_workers_alive() -> list[str]:
    """Names of the workers running in this process (the embedded default's)."""
    return [w.name for w in _started if w.alive()]
