"""Zip archives, opened defensively: each member becomes an upload of its own.

Member paths are checked (no absolute paths, no `..`), sizes are counted as the bytes
come out rather than trusted from the headers, the ratio of expanded to packed size is
bounded (zip bombs), and archives inside archives are opened to a fixed depth only.
"""

import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

MAX_DEPTH = 2  # an archive, and archives inside it; deeper ones are refused
MAX_MEMBERS = 10_000
MAX_RATIO = 200  # expanded bytes per packed byte
READ_SIZE = 1 << 20


class ArchiveError(ValueError):
    pass


@dataclass(frozen=True)
class Member:
    path: str
    stream: IO[bytes] | None  # None when `error` says why it was refused
    error: str = ""


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(".zip")


def _safe_path(name: str) -> str | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return ""
    return str(path)


class _Bounded(io.RawIOBase):
    """Reads a member and fails once it gives more than it may."""

    def __init__(self, raw: IO[bytes], limit: int, name: str, why: str) -> None:
        self.raw, self.limit, self.name, self.why, self.seen = raw, limit, name, why, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        self.seen += len(data)
        if self.seen > self.limit:
            raise ArchiveError(f"{self.name}: {self.why}")
        buffer[: len(data)] = data
        return len(data)


def members(stream: IO[bytes], *, prefix: str, max_bytes: int, depth: int = 1) -> Iterator[Member]:
    """Each file in the archive, with its path under `prefix` (the archive's name).

    A member that turns out too large raises ArchiveError while it is being read."""
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile:
        raise ArchiveError(f"{prefix}: not a readable zip archive") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"{prefix}: more than {MAX_MEMBERS} files")
        for info in infos:
            safe = _safe_path(info.filename)
            if safe == "":
                continue  # hidden files and macOS resource forks
            label = f"{prefix}/{info.filename}"
            if safe is None:
                yield Member(label, None, "refused: the path leaves the archive (absolute or '..')")
                continue
            if info.flag_bits & 0x1:
                yield Member(label, None, "refused: the member is encrypted")
                continue
            path = f"{prefix}/{safe}"
            ratio_limit = max(info.compress_size, 1) * MAX_RATIO
            raw = (
                _Bounded(
                    archive.open(info),
                    ratio_limit,
                    path,
                    "expands far beyond its packed size (a zip bomb?)",
                )
                if ratio_limit < max_bytes
                else _Bounded(
                    archive.open(info),
                    max_bytes,
                    path,
                    f"larger than the {max_bytes // 1_000_000} MB limit",
                )
            )
            if is_archive(safe):
                if depth >= MAX_DEPTH:
                    yield Member(path, None, f"refused: archives nested deeper than {MAX_DEPTH}")
                    continue
                with tempfile.SpooledTemporaryFile(max_size=16 << 20) as inner:
                    try:
                        shutil.copyfileobj(raw, inner, READ_SIZE)
                        inner.seek(0)
                        yield from members(inner, prefix=path, max_bytes=max_bytes, depth=depth + 1)
                    except ArchiveError as error:
                        yield Member(path, None, f"refused: {error}")
                continue
            yield Member(path, io.BufferedReader(raw, READ_SIZE))
