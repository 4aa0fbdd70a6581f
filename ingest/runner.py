"""Who does the background work for a command-line run.

Embedded default: if no kb server owns the vector store, this process becomes its
owner and runs its own worker until done; if one does, this process only queues work
and the server's worker does it. With a Qdrant server, separate workers do the work.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings


@dataclass
class Worker:
    owner: bool

    def describe(self) -> str:
        if self.owner:
            return "working in this process"
        if settings.KB_INPROCESS_WORKER:
            return "the running kb server does the work"
        return "kb workers do the work"


@contextlib.contextmanager
def background_worker() -> Iterator[Worker]:
    if not settings.KB_INPROCESS_WORKER:
        yield Worker(owner=False)
        return
    from ingest.vectors import vector_store, vector_store_close
    from ingest.vectors.edge import ShardBusy

    try:
        vector_store()
    except ShardBusy:
        yield Worker(owner=False)
        return
    from ingest.services import ingest_reconcile
    from kb.worker import worker_start

    ingest_reconcile()  # we own the store, so anything unfinished is orphaned: redo it
    worker = worker_start(name="ingest-folder")
    try:
        yield Worker(owner=True)
    finally:
        worker.stop()
        vector_store_close()
