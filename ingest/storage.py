"""Original files, kept once per content under KB_DATA_DIR/files/<sha256>.

Never served from a static path: downloads go through an access check.
"""

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ingest.data_lock import writing


class TooLarge(ValueError):
    pass


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int
    path: Path


def files_dir() -> Path:
    folder = settings.KB_DATA_DIR / "files"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def path_for(sha256: str) -> Path:
    return files_dir() / sha256


def store(chunks: Iterable[bytes], *, limit: int) -> Stored:
    """Write the bytes under their SHA-256, stopping at `limit` bytes."""
    digest = hashlib.sha256()
    size = 0
    handle, temp = tempfile.mkstemp(dir=files_dir(), prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(
                        f"the file is larger than the {limit // 1_000_000} MB limit "
                        "(KB_MAX_UPLOAD_MB)"
                    )
                digest.update(chunk)
                out.write(chunk)
        final = path_for(digest.hexdigest())
        os.replace(temp, final)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Stored(sha256=digest.hexdigest(), size=size, path=final)


def remove_unless_used(sha256: str) -> None:
    from ingest.models import DocumentVersion

    # Under the write lock: a backup links the files its database snapshot names.
    with writing():
        if not DocumentVersion.objects.filter(sha256=sha256).exists():
            path_for(sha256).unlink(missing_ok=True)
