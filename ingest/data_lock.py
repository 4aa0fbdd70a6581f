"""A lock between the writers of the data folder and a backup (server.backup).

Writes to the embedded vector store and removals from the file store hold it shared,
each for its own moment; a backup holds it exclusively while it copies the store's
folder, snapshots the database and links the files, so that what it takes is a state
the processes writing left whole. A file lock, since the backup runs in another process
than the one that owns the vector store (`serve`, or `ingest_folder`).
"""

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings


def _path() -> Path:
    return Path(settings.KB_DATA_DIR) / "writes.lock"


@contextlib.contextmanager
def _held(mode: int) -> Iterator[None]:
    # A file of its own each time: flock belongs to the open file, so two threads
    # sharing one would release each other's hold.
    with open(_path(), "a") as lock:
        fcntl.flock(lock, mode)
        yield


def writing() -> contextlib.AbstractContextManager[None]:
    """Around one write: many at once, never during a backup's snapshot."""
    return _held(fcntl.LOCK_SH)


def writes_paused() -> contextlib.AbstractContextManager[None]:
    """For a backup's snapshot: waits for the writes under way, holds off new ones."""
    return _held(fcntl.LOCK_EX)
