from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from kb.management.base import require_migrated


class Command(BaseCommand):
    help = "Serve kb (ASGI) on one process: the embedded default's single owner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        require_migrated()
        self.stdout.write(f"kb is starting at http://{options['host']}:{options['port']}/")
        uvicorn.run(
            "server.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=1,
            lifespan="auto",
            log_level="info",
            log_config=None,  # uvicorn's lines go through kb's LOGGING (KB_LOG_FORMAT)
        )
