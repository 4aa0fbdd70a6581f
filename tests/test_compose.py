"""No Docker engine runs here: the production compose file is checked by parsing it."""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "compose" / "docker-compose.yml"


def test_compose_describes_the_production_shape():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"web", "worker-ingest", "worker-embed", "beat", "postgres", "redis", "qdrant"} <= set(
        services
    )
    environment = services["worker-embed"]["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "SECRET_KEY_FILE"):
        assert environment[name]
    assert "-Q embed" in services["worker-embed"]["command"]
    assert "-Q ingest" in services["worker-ingest"]["command"]
