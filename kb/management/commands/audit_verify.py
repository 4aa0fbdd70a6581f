from typing import Any

from django.core.management.base import CommandError

from kb.audit import audit_verify
from kb.management.base import KbCommand


class Command(KbCommand):
    help = "Check the audit trail's hash chain; exits non-zero at the first row that does not fit."

    def handle(self, *args: Any, **options: Any) -> None:
        result = audit_verify()
        if not result.ok:
            raise CommandError(
                f"audit chain BROKEN after {result.checked} good rows: {result.message}"
            )
        self.stdout.write(result.message)
