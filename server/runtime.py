"""The embedded runtime: what a kb process starts beside its own work, by runtime shape.

Embedded default (no QDRANT_URL): the vector engine admits one process, its owner. The
owner opens the engine, re-queues whatever a previous owner left unfinished, and runs
the background worker in threads (server.worker). `serve` becomes the owner for as long
as it runs, keeps reconciling, expires texts past their retention (hourly), and starts
the bundled model's server unless LLM_BASE_URL is set; `ingest_folder` becomes the owner
only while no server is, and otherwise queues work for the server's worker. Production:
workers are separate processes (`celery -A server worker`, with `celery -A server beat`
reconciling and expiring), and web processes start nothing but the model pool's clients.
"""

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from django.conf import settings

from ingest.pipeline import ingest_reconcile
from ingest.vectors import StoreBusy, vector_store, vector_store_close
from retrieval.evaluation import evaluations_interrupt
from retrieval.local_llm import PortTaken, local_llms_start
from retrieval.retention import retention_expire
from server.worker import queues_purge, worker_start

logger = logging.getLogger(__name__)


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class Runtime:
    parts: list[Stoppable] = field(default_factory=list)

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()


class _Every:
    """Runs `work` every `seconds` in a thread of its own; a failure waits for the next."""

    def __init__(self, name: str, seconds: float, work: Callable[[], object]) -> None:
        self._seconds, self._work = seconds, work
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._seconds):
            try:
                self._work()
            except Exception:
                logger.exception("%s failed; retrying next period", self._thread.name)

    def stop(self) -> None:
        self._stopped.set()


class _VectorStoreCloser:
    def stop(self) -> None:
        vector_store_close()


class _OwnerMark:
    """A lock on a file in the data folder, held for as long as this process owns the
    store: the system lets it go however the process ends, so another process can tell
    at once whether an owner is alive (owner_alive) without opening the store."""

    def __init__(self) -> None:
        self._fd = os.open(_owner_path(), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def stop(self) -> None:
        os.close(self._fd)


def _owner_path() -> Path:
    return Path(settings.KB_DATA_DIR) / "owner.lock"


def owner_alive() -> bool:
    """Whether a process owns the embedded default's store (a server, or a command
    working in its place)."""
    fd = os.open(_owner_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _become_owner(runtime: Runtime, *, name: str) -> None:
    """Raises StoreBusy when another process owns the vector store."""
    vector_store()
    runtime.parts.append(_VectorStoreCloser())
    runtime.parts.append(_OwnerMark())
    # This process is the only worker, so all unfinished work is orphaned; re-queued
    # before the worker starts, so that no claim of its own is voided, once each: what
    # the broker still holds is dropped first.
    if dropped := queues_purge():
        logger.info("dropped %d messages left by the previous owner", dropped)
    if requeued := ingest_reconcile():
        logger.info("re-queued %d unfinished documents", requeued)
    if interrupted := evaluations_interrupt():
        logger.info("%d evaluation runs were interrupted", interrupted)
    runtime.parts.append(worker_start(name=name))


def runtime_start() -> Runtime:
    """For `serve`: a second server on the same data fails here, at start-up."""
    runtime = Runtime()
    if settings.KB_LOCAL_LLM:
        try:
            runtime.parts.extend(local_llms_start())
        except PortTaken:
            raise  # serving would answer from a server nobody controls: refuse, say why
        except RuntimeError:
            # Search still works; questions answer 503 and say why.
            logger.exception("the local model did not start")
    if settings.KB_INPROCESS_WORKER:
        try:
            _become_owner(runtime, name="embedded")
        except BaseException:
            runtime.stop()
            raise
        # Re-queues work whose message was lost, every third of the staleness period.
        stale = timedelta(seconds=settings.KB_STALE_AFTER_SECONDS)
        runtime.parts.append(
            _Every(
                "kb-reconcile",
                max(stale.total_seconds() / 3, 10),
                lambda: ingest_reconcile(stale_after=stale),
            )
        )
        runtime.parts.append(
            _Every("kb-retention", settings.KB_RETENTION_RUN_SECONDS, retention_expire)
        )
    return runtime


@dataclass(frozen=True)
class BackgroundWork:
    owner: bool

    def describe(self) -> str:
        if self.owner:
            return "working in this process"
        if settings.KB_INPROCESS_WORKER:
            return "the running kb server does the work"
        return "kb workers do the work"


@contextlib.contextmanager
def background_work() -> Iterator[BackgroundWork]:
    """For a command-line run: who does the work it queues, for as long as it runs."""
    if not settings.KB_INPROCESS_WORKER:
        yield BackgroundWork(owner=False)
        return
    runtime = Runtime()
    try:
        _become_owner(runtime, name="ingest-folder")
    except StoreBusy:
        runtime.stop()
        yield BackgroundWork(owner=False)
        return
    try:
        yield BackgroundWork(owner=True)
    finally:
        runtime.stop()
