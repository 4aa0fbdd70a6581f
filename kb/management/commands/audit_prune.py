from typing import Any

from django.core.management.base import CommandParser

from kb.audit import audit_prune
from kb.management.base import KbCommand, parse_when


class Command(KbCommand):
    help = "Delete audit rows older than a date; the rest stays verifiable from a checkpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", required=True, help="a date or date-time (UTC)")

    def handle(self, *args: Any, **options: Any) -> None:
        removed = audit_prune(before=parse_when(options["before"]), actor=self.actor)
        self.stdout.write(f"pruned {removed} audit rows before {options['before']}")
