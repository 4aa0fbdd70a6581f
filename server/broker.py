"""The embedded default's broker: kombu's folder transport, each message whole before
it appears (`folder://`, registered with kombu on import).

kombu's own writer creates `<time>_<uuid>.<queue>.msg` and then writes into it, while a
consumer may already have moved and read it: a test run read an empty file, failed to
decode it and the worker thread died. Here a message is written under a name no
consumer looks for, then renamed into place, which is atomic within one folder.
"""

import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

SCHEME = "folder"


class Channel(filesystem.Channel):
    # kombu names this argument "payload" here and "message" in its base class.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        try:
            with open(f"{final}.part", "wb") as partial:
                partial.write(dumps(payload).encode())
            os.replace(f"{final}.part", final)
        except OSError as error:
            raise ChannelError(f"Cannot add file {final!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
