from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from kb.management.base import require_migrated


class Command(BaseCommand):
    help = (
        "Serve kb's MCP tools (search, fetch, ask, list_collections) over standard input "
        "and output, as the token in --token-file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--token-file", required=True, help="a file holding the API token (kb_...)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from retrieval.mcp_server import bearer_principal, build

        require_migrated()
        try:
            token = Path(options["token_file"]).read_text().strip()
        except OSError as error:
            raise CommandError(f"cannot read the token file: {error.strerror}") from None
        if bearer_principal(f"Bearer {token}") is None:
            raise CommandError("the token in the file is expired, revoked or invalid")
        # Checked again on every call: a token revoked meanwhile is refused at once.
        build(lambda ctx: bearer_principal(f"Bearer {token}")).run("stdio")
