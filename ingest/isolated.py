"""Parsing and chunking in a child process, under a memory limit and a time limit.

A file can make a parser allocate without end, loop, or crash: unstructured and the
libraries under it read whatever they are given. In a child process that costs only
the child. The parent watches the child's resident memory and its time, stops it past
KB_PARSE_MEMORY_MB or KB_PARSE_SECONDS and says which; a child that dies is reported
too. The same in both runtime shapes: each worker thread of the embedded default and
each prefork process of production keeps one child, reused from file to file until it
is stopped. The parent never imports the parsers.

Small files go to the child in batches (`extract_batch_isolated`): one message for many
files, a reply for each as it is done, so a batch costs one round trip where each file
cost one. Limits hold per file: each reply restarts the clock, and a file that takes the
child past a limit, or kills it, is reported alone; the files before it are done, and
those after it are handed back untried.
"""

import functools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import psutil
from django.conf import settings

from ingest.extract import Extracted, Limits
from ingest.parsing import ParseError

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.05
WHAT_TO_DO = "it may be damaged or too large; split or repair it and upload it again"
# Loading the parsers and models, before any file: not counted in KB_PARSE_SECONDS.
START_SECONDS = 300


class Stopped(Exception):
    """The child was stopped at a limit, or died; the message says which, for a person."""


class _Child:
    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        # Blocking, whatever socket.setdefaulttimeout() a library set in this process: a
        # timeout would leave the child's end non-blocking, and its first read failing.
        mine.setblocking(True)
        theirs.setblocking(True)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "server.settings"),
            "KB_DATA_DIR": str(settings.KB_DATA_DIR),
        }
        # Its own session: a Ctrl-C meant for the server does not reach it. It ends when
        # its socket closes or its parent dies.
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [sys.executable, "-m", "ingest.isolated", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self.conn = Connection(mine.detach())
        self.info = psutil.Process(self.process.pid)
        self._ready()

    def _ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not self.conn.poll(POLL_SECONDS):
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the parse process did not start: see the log")
        self.conn.recv()

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss(self) -> int:
        try:
            return int(self.info.memory_info().rss)
        except psutil.NoSuchProcess:
            return 0

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()


class Job(NamedTuple):
    path: str
    extension: str
    title: str


_local = threading.local()


def _this_threads_child() -> _Child:
    child: _Child | None = getattr(_local, "child", None)
    if child is None or not child.alive():
        child = _local.child = _Child()
    return child


def _drop_child(child: _Child) -> None:
    child.stop()
    _local.child = None


def _retire_if_large(child: _Child) -> None:
    if child.rss() > settings.KB_PARSE_MEMORY_MB * 2**20 // 2:
        # Memory a large file left behind is not always returned: the next starts afresh.
        _drop_child(child)


def extract_isolated(
    path: Path,
    extension: str,
    *,
    title: str,
    limits: Limits,
    parsed: Callable[[int | None], object],
) -> Extracted:
    """ingest.extract.extract in this thread's child. Raises ParseError for a file that
    cannot be read, Stopped for one that took the child past a limit or killed it."""
    child = _this_threads_child()
    try:
        _send(child, ([Job(str(path), extension, title)], limits))
        extracted = _wait(child, parsed)
    except ParseError:
        raise  # the child is well, and ready for the next file
    except BaseException:
        # Stopped, or this thread is (a task's time limit): the child's work is dropped.
        _drop_child(child)
        raise
    _retire_if_large(child)
    return extracted


# What became of one file of a batch: its passages, or why not. None: not tried, since
# the child was stopped on a file before it.
Outcome = Extracted | ParseError | RuntimeError | Stopped | None


def extract_batch_isolated(
    jobs: list[Job], *, limits: Limits, parsed: Callable[[int, int | None], object]
) -> list[Outcome]:
    """extract_isolated for many files in one message to this thread's child, each file
    under the limits on its own. `parsed(index, pages)` as each file's parse ends."""
    child = _this_threads_child()
    outcomes: list[Outcome] = [None] * len(jobs)
    try:
        _send(child, (jobs, limits))
        for index in range(len(jobs)):
            try:
                outcomes[index] = _wait(child, functools.partial(parsed, index))
            except (ParseError, RuntimeError) as error:
                outcomes[index] = error  # the child carries on with the next file
            except Stopped as error:
                outcomes[index] = error
                _drop_child(child)
                break
    except BaseException:
        _drop_child(child)
        raise
    else:
        if child.alive():
            _retire_if_large(child)
    return outcomes


def _wait(child: _Child, parsed: Callable[[int | None], object]) -> Extracted:
    """One file's replies: its passages, or ParseError (unreadable), RuntimeError (the
    parser's bug) or Stopped (past a limit, or the child died)."""
    memory_mb, seconds = settings.KB_PARSE_MEMORY_MB, settings.KB_PARSE_SECONDS
    deadline = time.monotonic() + seconds
    while True:
        message = _receive(child)
        if message is not None:
            kind, value = message
            if kind == "parsed":
                parsed(value)
            elif kind == "refused":
                raise ParseError(value)
            elif kind == "error":
                raise RuntimeError(f"the parser failed: {value}")
            else:
                return value  # type: ignore[no-any-return]
        elif not child.alive():
            raise Stopped(_died(child))
        elif child.rss() > memory_mb * 2**20:
            raise Stopped(
                f"reading the file took more than {memory_mb} MB of memory "
                f"(KB_PARSE_MEMORY_MB): {WHAT_TO_DO}"
            )
        elif time.monotonic() > deadline:
            raise Stopped(
                f"reading the file took longer than {seconds} s (KB_PARSE_SECONDS): {WHAT_TO_DO}"
            )


def _send(child: _Child, job: tuple[Any, ...]) -> None:
    try:
        child.conn.send(job)
    except OSError:
        raise Stopped(_died(child)) from None


def _receive(child: _Child) -> tuple[str, Any] | None:
    """The child's next message, None for none yet. A broken socket is a dead child
    (ConnectionError would otherwise pass for a broker's, and be retried as one)."""
    try:
        if child.conn.poll(POLL_SECONDS):
            message: tuple[str, Any] = child.conn.recv()
            return message
    except (EOFError, OSError):
        raise Stopped(_died(child)) from None
    return None


def _died(child: _Child) -> str:
    if child.alive():
        child.process.kill()  # its socket broke: it is of no use now
    code = child.process.wait()
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    return f"the parser stopped on this file ({how}): {WHAT_TO_DO}"


def _serve(conn: Connection) -> None:
    """The child: one message of files at a time (each replied to as it is done), until
    the parent closes the socket or dies."""
    import django

    django.setup()  # the parent's settings and logging
    from ingest.extract import extract, warm_up

    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    warm_up()
    conn.send(("ready", None))
    while True:
        try:
            jobs, limits = conn.recv()
        except EOFError:
            return
        for path, extension, title in jobs:
            reply: tuple[str, Any]
            try:
                extracted = extract(
                    Path(path),
                    extension,
                    title=title,
                    limits=limits,
                    parsed=lambda pages: conn.send(("parsed", pages)),
                )
            except ParseError as error:
                reply = ("refused", str(error))
            except Exception as error:
                logger.exception("parse of %s failed", path)
                reply = ("error", f"{type(error).__name__}: {error}")
            else:
                reply = ("done", extracted)
            conn.send(reply)


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
