from typing import Any

from django.core.management.base import CommandParser

from kb.audit import audit_filter, export_csv, export_jsonl
from kb.management.base import KbCommand, parse_when


class Command(KbCommand):
    help = "Export audit rows as JSON Lines or CSV, filtered by time, user and collection."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--since", help="from this date or date-time (UTC), inclusive")
        parser.add_argument("--until", help="to this date or date-time (UTC), exclusive")
        parser.add_argument("--user", help="actor user name")
        parser.add_argument("--collection", help="collection slug")
        parser.add_argument("--action")
        parser.add_argument("--outcome", choices=["ok", "denied", "refused", "error"])
        parser.add_argument("--output", help="write to this file instead of standard output")

    def handle(self, *args: Any, **options: Any) -> None:
        events = audit_filter(
            since=parse_when(options["since"]) if options["since"] else None,
            until=parse_when(options["until"]) if options["until"] else None,
            user=options["user"],
            collection=options["collection"],
            action=options["action"],
            outcome=options["outcome"],
        ).iterator()
        lines = export_csv(events) if options["format"] == "csv" else export_jsonl(events)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8", newline="") as out:
                out.writelines(lines)
        else:
            for line in lines:
                self.stdout.write(line, ending="")
