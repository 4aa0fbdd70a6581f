from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kb.management.base import require_migrated
from retrieval.local_models import ModelUnavailable, local_model


class Command(BaseCommand):
    help = "Serve kb (ASGI) on one process: the embedded default's single owner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--check-model",
            action="store_true",
            help="check KB_LOCAL_MODEL (joining a split model's parts once), then exit",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        if settings.KB_LOCAL_LLM or options["check_model"]:
            # Before serving: a model named wrong or installed in part is a start-up
            # error, not a server whose every answer is a 503. A split model's parts are
            # joined here the first time (a few seconds).
            try:
                model = local_model()
            except ModelUnavailable as error:
                raise CommandError(str(error)) from None
            self.stdout.write(f"local model {model.name}: {model.path}")
            if options["check_model"]:
                return
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
            access_log=False,  # kb's own line has the request id (server/access_log.py)
        )
