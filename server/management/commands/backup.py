import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from server.backup import BackupError, backup_create, summary


class Command(BaseCommand):
    help = (
        "Back up the embedded default (SQLite, the embedded vector store, the files, the "
        "keys and the audit head) into a new folder; kb may keep running."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dest", help="a new folder")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        dest = Path(options["dest"])
        try:
            manifest = backup_create(dest)
        except BackupError as error:
            raise CommandError(str(error)) from None
        for sha256 in manifest["missing_files"]:
            self.stderr.write(
                f"not in the data folder, so not in the backup: files/{sha256} (its "
                "document cannot be downloaded or ingested again)"
            )
        seconds = time.monotonic() - started
        self.stdout.write(f"backup {summary(manifest)} seconds={seconds:.1f} into {dest}")
