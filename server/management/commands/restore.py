from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from server.backup import KEYS, BackupError, backup_restore, summary


class Command(BaseCommand):
    # Not a KbCommand: that opens the database, and would make one in the target folder.
    help = "Restore a backup (manage.py backup) into a new or empty data folder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="the backup's folder")
        parser.add_argument("--data-dir", help="where to restore it (default: KB_DATA_DIR)")

    def handle(self, *args: Any, **options: Any) -> None:
        target = Path(options["data_dir"] or settings.KB_DATA_DIR)
        try:
            manifest = backup_restore(Path(options["source"]), target)
        except BackupError as error:
            raise CommandError(str(error)) from None
        for name, variable in KEYS.items():
            if name not in manifest["keys"]:
                self.stderr.write(
                    f"the backup holds no {name}: run kb with the same {variable} as the "
                    "kb it was taken from"
                )
        if settings.KB_AUDIT_HEAD_FILE:
            self.stderr.write(
                f"the audit head is restored to {target / 'audit_head.json'}: move it to "
                "where KB_AUDIT_HEAD_FILE points"
            )
        self.stdout.write(f"restored {summary(manifest)} into {target}")
