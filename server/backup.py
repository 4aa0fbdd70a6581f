"""Backup and restore of the embedded default: the SQLite database, the embedded vector
store, the file store, and what a restore needs beside them (the secret key, the audit
key and the audit chain's head). Production (PostgreSQL, a Qdrant server) backs up with
those servers' own tools: README "Backup and restore".

A backup is consistent while `serve` runs, and never opens the vector store, which
admits one process. For a moment it holds the data folder's write lock exclusively
(ingest.data_lock: vector writes and file removals wait), and in it reads the audit
head, snapshots the database (SQLite's backup API, one read transaction), copies the
vector store's folder and hard-links the files the snapshot names; the files are copied
from the links afterwards. A store's folder copied between writes is what a crash would
leave, which the engine recovers from by replaying its write-ahead log; the backup opens
its copy to count the points, which proves it. Vector writes come before the database
commits that rely on them (a version goes live in the store, then in the database), so
the snapshot never names a vector the copy lacks; at most the copy still holds points
of a version being replaced or deleted, which search skips (passages come from the
database), as it does while kb runs.

A backup is a folder: the parts, and `manifest.json` (kb version, counts, the audit
head, each file's SHA-256), written last; the folder takes its name only once whole. A
restore checks every file against the manifest and opens the database and the vector
stores in a folder beside the target, and only then moves it into place.
"""

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Model

from ingest.data_lock import writes_paused
from ingest.models import Chunk, Document, DocumentVersion
from ingest.storage import path_for
from ingest.vectors import embedded_counts, embedded_folder
from kb.audit_anchor import Head, head_path
from kb.models import ApiToken, AuditChainHead, AuditCheckpoint, AuditEvent, Collection
from retrieval.models import Conversation, Exchange, Feedback

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "kb.sqlite3"
HEAD = "audit_head.json"
FILES = "files"
VECTORS = "vectors"
# Made once in the data folder, unless the environment gives them: file -> variable.
KEYS = {"secret_key": "SECRET_KEY", "audit_key": "KB_AUDIT_KEY"}
COUNTED: dict[str, type[Model]] = {
    "users": User,
    "collections": Collection,
    "tokens": ApiToken,
    "documents": Document,
    "versions": DocumentVersion,
    "passages": Chunk,
    "conversations": Conversation,
    "exchanges": Exchange,
    "feedback": Feedback,
    "audit_rows": AuditEvent,
}


class BackupError(Exception):
    """What is wrong, and what to do about it, in one line."""


def _database() -> Path:
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3" or settings.QDRANT_URL:
        raise BackupError(
            "backup and restore cover the embedded default (SQLite and the embedded vector "
            "engine); with PostgreSQL or a Qdrant server, back up with their own tools "
            '(README, "Backup and restore")'
        )
    return Path(database["NAME"])


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute(sql).fetchall()


def _table(model: type[Model]) -> str:
    return model._meta.db_table


def summary(manifest: dict[str, Any]) -> str:
    """The counts, as the commands' last line shows them."""
    counts = manifest["counts"]
    points = sum(store["points"] for store in manifest["vectors"].values())
    return (
        f"documents={counts['documents']} passages={counts['passages']} points={points} "
        f"files={counts['files']} conversations={counts['conversations']} "
        f"audit_rows={counts['audit_rows']}"
    )


# Backup


def backup_create(dest: Path) -> dict[str, Any]:
    """Back the data folder up into `dest`, a new folder; returns its manifest."""
    database = _database()
    if not database.exists():
        raise BackupError(f"no database at {database}: nothing to back up")
    dest = dest.expanduser().absolute()
    data = Path(settings.KB_DATA_DIR)
    if dest.exists():
        raise BackupError(f"{dest} already exists: name a new folder for the backup")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a folder")
    if dest.resolve().is_relative_to(data):
        raise BackupError(f"{dest} is inside the data folder {data}: put the backup elsewhere")
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.incomplete-"))
    links = Path(tempfile.mkdtemp(dir=data, prefix=".backup-"))
    try:
        missing = _snapshot(database, staging, links)
        shutil.copytree(links, staging / FILES)
        for name in KEYS:
            if (data / name).exists():
                shutil.copy2(data / name, staging / name)
        manifest = _manifest(staging, missing)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(links, ignore_errors=True)
    return manifest


def _snapshot(database: Path, staging: Path, links: Path) -> list[str]:
    """The part that must be whole, with vector writes and file removals held off.
    Returns the files the database names that the data folder lacks."""
    with writes_paused():
        # The head first: it must never be ahead of the database (audit_verify).
        if head_path().exists():
            shutil.copy2(head_path(), staging / HEAD)
        with (
            contextlib.closing(sqlite3.connect(database, timeout=30)) as source,
            contextlib.closing(sqlite3.connect(staging / DATABASE)) as target,
        ):
            source.backup(target)  # one step: one read transaction, one moment
        if embedded_folder().exists():
            shutil.copytree(embedded_folder(), staging / VECTORS)
        missing = []
        sql = f"SELECT DISTINCT sha256 FROM {_table(DocumentVersion)}"  # noqa: S608 (our table)
        for (sha256,) in _query(staging / DATABASE, sql):
            try:
                os.link(path_for(sha256), links / sha256)
            except FileNotFoundError:
                missing.append(sha256)
    return missing


def _counts(database: Path) -> dict[str, int]:
    return {
        name: _query(database, f"SELECT count(*) FROM {_table(model)}")[0][0]  # noqa: S608
        for name, model in COUNTED.items()
    }


def _audit_head(staging: Path) -> dict[str, Any]:
    database = staging / DATABASE
    [(seq, hash)] = _query(database, f"SELECT seq, hash FROM {_table(AuditChainHead)}")  # noqa: S608
    if (staging / HEAD).exists():
        anchor = Head(**json.loads((staging / HEAD).read_text()))
        sql = f"SELECT seq, hash FROM {_table(AuditCheckpoint)} ORDER BY seq DESC LIMIT 1"  # noqa: S608
        checkpoint = next(iter(_query(database, sql)), (0, ""))
        if (anchor.pruned_seq, anchor.pruned_hash) != tuple(checkpoint):
            # A prune commits, then moves the head kept outside: it ran in between.
            raise BackupError("the audit trail was pruned while the backup ran: run it again")
    return {"seq": seq, "hash": hash}


def _checksums(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _manifest(staging: Path, missing: list[str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kb_version": version("kb"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_dir": str(settings.KB_DATA_DIR),
        "counts": {**_counts(staging / DATABASE), "files": _files(staging)},
        "missing_files": missing,
        "vectors": embedded_counts(staging / VECTORS) if (staging / VECTORS).exists() else {},
        "audit_head": _audit_head(staging),
        "keys": [name for name in KEYS if (staging / name).exists()],
        "checksums": _checksums(staging),
    }


# Restore


def backup_restore(source: Path, data_dir: Path) -> dict[str, Any]:
    """Restore the backup in `source` into `data_dir`, which must be new or empty; returns
    the backup's manifest. Nothing is left in `data_dir` unless all of it is restored."""
    _database()
    source = source.expanduser().absolute()
    target = data_dir.expanduser().absolute()
    manifest = _manifest_read(source)
    if held := _data_held(target):
        raise BackupError(
            f"{target} is not empty (it holds {', '.join(held[:5])}): restore into a new "
            "folder, or move this one away first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.restoring-"))
    try:
        for relative, checksum in manifest["checksums"].items():
            copy = staging / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(source / relative, copy)
            except FileNotFoundError:
                raise _damaged(source, f"{relative} is missing") from None
            if _sha256(copy) != checksum:
                raise _damaged(source, f"{relative} does not match its checksum")
        _check_opens(source, staging, manifest)
        if target.exists():
            for leftover in target.iterdir():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        staging.rename(target)  # onto an empty folder, or none: whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _damaged(source: Path, what: str) -> BackupError:
    return BackupError(f"the backup in {source} is damaged: {what}; restore another backup")


def _manifest_read(source: Path) -> dict[str, Any]:
    if not source.is_dir():
        raise BackupError(f"{source} is not a folder")
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(
            f"{source} is not a whole kb backup: it has no {MANIFEST} (a backup that was "
            "cut off never gets one)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise _damaged(source, f"{MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source / MANIFEST} is not a manifest this kb reads (format {FORMAT})")
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict) or DATABASE not in checksums:
        raise _damaged(source, f"{MANIFEST} lists no database")
    for relative in checksums:
        path = PurePosixPath(relative)
        if path.is_absolute() or ".." in path.parts:
            raise _damaged(source, f"{MANIFEST} names a file outside the backup: {relative}")
    return manifest


def _data_held(target: Path) -> list[str]:
    if not target.exists():
        return []
    if not target.is_dir():
        return [target.name]
    return sorted(entry.name for entry in target.iterdir() if not _startup_leftover(entry))


def _startup_leftover(entry: Path) -> bool:
    """What kb's settings make in a data folder at start-up, before it holds any data."""
    if entry.name == "secret_key":
        return entry.is_file()
    return entry.name in ("static", "broker") and not any(
        path.is_file() for path in entry.rglob("*")
    )


def _check_opens(source: Path, staging: Path, manifest: dict[str, Any]) -> None:
    """The database and each vector store open and hold what the manifest counted."""
    database = staging / DATABASE
    [(integrity,)] = _query(database, "PRAGMA integrity_check")
    if integrity != "ok":
        raise _damaged(source, f"the database fails SQLite's integrity check ({integrity})")
    counts = {**_counts(database), "files": _files(staging)}
    for name, expected in manifest.get("counts", {}).items():
        if counts.get(name) != expected:
            raise _damaged(source, f"it holds {counts.get(name)} {name}, its manifest {expected}")
    vectors = staging / VECTORS
    try:
        found = embedded_counts(vectors) if vectors.exists() else {}
    except Exception as error:  # the engine's own words, named
        raise _damaged(source, f"the vector store does not open ({error})") from error
    if found != manifest.get("vectors", {}):
        raise _damaged(
            source, f"its vector stores hold {found}, its manifest {manifest['vectors']}"
        )


def _files(staging: Path) -> int:
    return len(list((staging / FILES).iterdir())) if (staging / FILES).exists() else 0
