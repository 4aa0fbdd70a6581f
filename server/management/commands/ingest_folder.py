import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.core.management.base import CommandError, CommandParser

from ingest.services import documents_store
from kb.management.base import KbCommand, get_collection
from server.management.progress import progress, versions_wait
from server.runtime import background_work


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


def files_opened(root: Path, files: list[Path]) -> Iterator[tuple[str, IO[bytes]]]:
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
                collection=collection, actor=self.actor, files=files_opened(root, files)
            )
            for n, result in enumerate(stored, 1):
                if result.error:
                    refused += 1
                    self.stderr.write(f"refused {result.path}: {result.error}")
                elif result.version is not None:
                    # Unchanged files count too: their earlier run may still be going.
                    skipped += result.duplicate
                    version_ids.append(result.version.pk)
                progress(self, "queued ", min(n, len(files)), len(files))
            self.stderr.write("")
            self.stdout.write(
                f"queued {len(version_ids) - skipped} files, {skipped} unchanged, "
                f"{refused} refused ({work.describe()})"
            )
            if not options["wait"]:
                return
            ready, failed = versions_wait(self, version_ids)
        seconds = time.monotonic() - started
        self.stdout.write(
            f"ingest files={len(files)} ready={len(ready)} failed={len(failed) + refused} "
            f"seconds={seconds:.1f}"
        )
