"""What the commands that queue ingestion share: a progress bar on a terminal, and the
wait until every queued version is ready or failed."""

import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from ingest.models import DocumentVersion, Stage


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def progress(command: BaseCommand, label: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        command.stderr.write(f"\r{label}{_bar(done, total)}", ending="")


def versions_wait(
    command: BaseCommand, version_ids: list[int]
) -> tuple[list[DocumentVersion], list[DocumentVersion]]:
    """(ready, failed) once none of the versions is still on its way; each failure is
    written with its reason."""
    terminal = (Stage.READY, Stage.FAILED)
    pending = set(version_ids)
    last_report = 0.0
    while pending:
        finished = DocumentVersion.objects.filter(pk__in=pending, stage__in=terminal)
        pending -= set(finished.values_list("pk", flat=True))
        done = len(version_ids) - len(pending)
        progress(command, "indexed ", done, len(version_ids))
        if not sys.stderr.isatty() and time.monotonic() - last_report > 30:
            command.stderr.write(f"indexed {done}/{len(version_ids)}")
            last_report = time.monotonic()
        if pending:
            time.sleep(settings.KB_POLL_SECONDS)
    command.stderr.write("")
    versions = list(DocumentVersion.objects.filter(pk__in=version_ids).select_related("document"))
    failed = [v for v in versions if v.stage == Stage.FAILED]
    for version in failed:
        command.stdout.write(f"failed {version.document.path}: {version.error}")
    return [v for v in versions if v.stage == Stage.READY], failed
