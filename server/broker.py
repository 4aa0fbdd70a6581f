"""The embedded default's broker: kombu's folder transport, each message whole before
it appears, in a folder of its own per queue (`folder://`, registered with kombu on
import).

kombu's own writer creates `<time>_<uuid>.<queue>.msg` and then writes into it, while a
consumer may already have moved and read it: a test run read an empty file, failed to
decode it and the worker thread died. Here a message is written under a name no
consumer looks for, then renamed into place, which is atomic within one folder.

kombu's reader lists and sorts the one shared folder for every message it takes, and
pops its way through the list from the front: with 10,000 files queued, each take cost
milliseconds, and each idle consumer's poll (every 50 ms) as much, all holding the GIL
that the worker's other threads need (bench/ingest_many.py). Here each queue has its
folder, listed once per backlog: a take is one rename and one read.

An idle consumer polls less and less often, up to once a second: three consumers each
polling every 50 ms cost 15 ms of CPU a second while nothing happened. A message put, or
a held one acknowledged (a consumer with all its prefetch held polls in vain until
then), in this process wakes them at once: the embedded default's uploads and next
stages are put by the process that consumes them.
"""

import collections
import os
import threading
import time
import uuid
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

SCHEME = "folder"
SUFFIX = ".msg"
IDLE_POLL_SECONDS = 1.0

# Puts and acknowledgements in this process so far: a consumer that saw none since its
# last empty poll waits on the condition, which each of them notifies.
_changed = threading.Condition()
_changes = 0


def _wake() -> None:
    global _changes
    with _changed:
        _changes += 1
        _changed.notify_all()


def queue_folder(root: str | os.PathLike[str], queue: str) -> str:
    return os.path.join(root, queue)


def messages(folder: str) -> list[str]:
    """The waiting messages' names, oldest first (names start with the time)."""
    try:
        return sorted(name for name in os.listdir(folder) if name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backlog: dict[str, collections.deque[str]] = collections.defaultdict(
            collections.deque
        )
        self._ready: set[str] = set()

    def _folder(self, queue: str) -> str:
        folder = queue_folder(self.data_folder_in, queue)
        if queue not in self._ready:
            os.makedirs(folder, exist_ok=True)
            # Messages an older kb left in the shared folder join their queue's folder.
            for name in os.listdir(self.data_folder_in):
                if name.endswith(f".{queue}{SUFFIX}"):
                    os.replace(os.path.join(self.data_folder_in, name), os.path.join(folder, name))
            self._ready.add(queue)
        return folder

    # kombu names this argument "payload" here and "message" in its base class.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        # Named by the time, to the nanosecond and padded, so that names sort as sent.
        name = f"{time.monotonic_ns():020d}_{uuid.uuid4()}.{queue}{SUFFIX}"
        final = os.path.join(self._folder(queue), name)
        try:
            with open(f"{final}.part", "wb") as partial:
                partial.write(dumps(payload).encode())
            os.replace(f"{final}.part", final)
        except OSError as error:
            raise ChannelError(f"Cannot add file {final!r} to directory") from error
        _wake()

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        _wake()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        _wake()

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        folder = self._folder(queue)
        backlog = self._backlog[queue]
        if not backlog:
            backlog.extend(messages(folder))
        while backlog:
            path = os.path.join(folder, backlog.popleft())
            claimed = f"{path}.taken"
            try:
                os.rename(path, claimed)  # whoever renames it first has it
            except FileNotFoundError:
                continue
            try:
                with open(claimed, "rb") as taken:
                    payload = taken.read()
                os.remove(claimed)
            except OSError as error:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from error
            return loads(bytes_to_str(payload))
        raise Empty()

    def _size(self, queue: str) -> int:
        return len(messages(queue_folder(self.data_folder_in, queue)))

    def _purge(self, queue: str) -> int:
        self._backlog[queue].clear()
        folder = queue_folder(self.data_folder_in, queue)
        count = 0
        for name in messages(folder):
            try:
                os.remove(os.path.join(folder, name))
                count += 1
            except FileNotFoundError:
                pass  # another consumer took it
        return count


class Transport(filesystem.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pause: float = self.polling_interval or 0.0

    # kombu's types name only **kwargs here.
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        """kombu's loop (virtual.Transport.drain_events), its sleep after an empty poll
        doubled each time, from `polling_interval` up to IDLE_POLL_SECONDS, and cut
        short by a put or an acknowledgement in this process."""
        started = time.monotonic()
        cycle = self.cycle
        assert cycle is not None  # made with the transport
        while True:
            seen = _changes
            try:
                cycle.get(self._deliver, timeout=timeout)
                self._pause = self.polling_interval or 0.0
                return
            except Empty:
                waited = time.monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise TimeoutError() from None  # socket.timeout, as kombu raises
                pause = self._pause if timeout is None else min(self._pause, timeout - waited)
                with _changed:
                    if _changes == seen:
                        _changed.wait(pause)
                self._pause = min(self._pause * 2, IDLE_POLL_SECONDS)


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
