import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from ingest.models import DocumentVersion, Stage
from ingest.services import documents_store
from kb.management.base import KbCommand, get_collection
from server.runtime import background_work


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _files(root: Path) -> tuple[list[Path], list[Path]]:
    """The folder's files, and the links among them that lead outside it (never read:
    a link to /etc/passwd would make it searchable by the collection's readers)."""
    inside: list[Path] = []
    outside: list[Path] = []
    top = root.resolve()
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        (inside if path.resolve().is_relative_to(top) else outside).append(path)
    return inside, outside


def _opened(root: Path, files: list[Path]) -> Iterator[tuple[str, IO[bytes]]]:
    """Each file open while it is read: (its path under root, its stream)."""
    for path in files:
        with path.open("rb") as stream:
            yield path.relative_to(root).as_posix(), stream


class Command(KbCommand):
    help = "Load every file under a folder into a collection (unchanged files are skipped)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("collection")
        parser.add_argument("path")
        parser.add_argument(
            "--wait", action="store_true", help="block until every file is indexed or failed"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        collection = get_collection(options["collection"])
        root = Path(options["path"]).expanduser()
        if not root.is_dir():
            raise CommandError(f"not a folder: {root}")
        files, outside = _files(root)
        for path in outside:
            self.stderr.write(f"refused {path.relative_to(root)}: a link to a file outside {root}")
        started = time.monotonic()
        version_ids: list[int] = []
        skipped, refused = 0, len(outside)
        with background_work() as work:
            stored = documents_store(
                collection=collection, actor=self.actor, files=_opened(root, files)
            )
            for n, result in enumerate(stored, 1):
                if result.error:
                    refused += 1
                    self.stderr.write(f"refused {result.path}: {result.error}")
                elif result.version is not None:
                    # Unchanged files count too: their earlier run may still be going.
                    skipped += result.duplicate
                    version_ids.append(result.version.pk)
                self._progress("queued ", min(n, len(files)), len(files))
            self.stderr.write("")
            self.stdout.write(
                f"queued {len(version_ids) - skipped} files, {skipped} unchanged, "
                f"{refused} refused ({work.describe()})"
            )
            if not options["wait"]:
                return
            ready, failed = self._wait(version_ids)
        for version in failed:
            self.stdout.write(f"failed {version.document.path}: {version.error}")
        seconds = time.monotonic() - started
        self.stdout.write(
            f"ingest files={len(files)} ready={len(ready)} failed={len(failed) + refused} "
            f"seconds={seconds:.1f}"
        )

    def _progress(self, label: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            self.stderr.write(f"\r{label}{_bar(done, total)}", ending="")

    def _wait(self, version_ids: list[int]) -> tuple[list[DocumentVersion], list[DocumentVersion]]:
        terminal = (Stage.READY, Stage.FAILED)
        pending = set(version_ids)
        last_report = 0.0
        while pending:
            finished = DocumentVersion.objects.filter(pk__in=pending, stage__in=terminal)
            pending -= set(finished.values_list("pk", flat=True))
            done = len(version_ids) - len(pending)
            self._progress("indexed ", done, len(version_ids))
            if not sys.stderr.isatty() and time.monotonic() - last_report > 30:
                self.stderr.write(f"indexed {done}/{len(version_ids)}")
                last_report = time.monotonic()
            if pending:
                time.sleep(settings.KB_POLL_SECONDS)
        self.stderr.write("")
        versions = list(
            DocumentVersion.objects.filter(pk__in=version_ids).select_related("document")
        )
        return (
            [v for v in versions if v.stage == Stage.READY],
            [v for v in versions if v.stage == Stage.FAILED],
        )
