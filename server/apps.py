from django.apps import AppConfig


class ServerConfig(AppConfig):
    """The top package: installed for its management commands (serve, ingest_folder)."""

    name = "server"
