"""Who uses this process's cores: parses count themselves here, so that embedding in
the same process leaves them a core (ingest.embedder reads the count)."""

import contextlib
import threading
from collections.abc import Iterator

_parses = 0  # running in this process
_lock = threading.Lock()


@contextlib.contextmanager
def parse_running() -> Iterator[None]:
    """Marks a parse running in this process. Parsing is pure Python and holds the GIL,
    one core; meanwhile embeddings here leave it that core and take the rest."""
    global _parses
    with _lock:
        _parses += 1
    try:
        yield
    finally:
        with _lock:
            _parses -= 1


def parses_running() -> int:
    return _parses
