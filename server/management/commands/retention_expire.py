from typing import Any

from kb.management.base import KbCommand
from retrieval.retention import retention_expire


class Command(KbCommand):
    help = (
        "Erase the question and answer texts whose collections' retention has passed, in "
        "the audit trail and in conversations (kb also does it every hour)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        expired = retention_expire(actor=self.actor)
        self.stdout.write(
            f"expired the texts of {expired.audit_rows} audit rows and "
            f"{expired.exchanges} conversation exchanges"
        )
