"""System status for admins: is every part of kb up, and how much work is waiting."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings

from ingest.vectors import vector_store
from kb.models import ModelProfile
from server.worker import QUEUES, inprocess_workers_alive

PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _queue_depths() -> dict[str, int]:
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=PROBE_SECONDS)
        return {queue: int(client.llen(queue)) for queue in QUEUES}
    # The filesystem broker: one file per waiting message, named after its queue.
    folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
    names = [path.name for path in folder.glob("*.msg")]
    return {queue: sum(name.endswith(f".{queue}.msg") for name in names) for queue in QUEUES}


def _workers() -> Check:
    if settings.KB_INPROCESS_WORKER:
        alive = inprocess_workers_alive()
        return Check("Workers", bool(alive), ", ".join(alive) or "the in-process worker is down")
    from server.celery import app

    replies = app.control.ping(timeout=PROBE_SECONDS)
    names = sorted(name for reply in replies or [] for name in reply)
    return Check("Workers", bool(names), ", ".join(names) or "no worker answered")


def _vectors() -> Check:
    store = vector_store()
    return Check("Qdrant", True, f"{store.describe()}: {store.count()} vectors")


def _model_urls() -> list[str]:
    urls = list(settings.LLM_BASE_URLS)
    for profile in ModelProfile.objects.all():
        urls += [url for url in profile.urls if url not in urls]
    return urls


def _model(url: str) -> Check:
    response = httpx.get(f"{url.rstrip('/')}/models", timeout=PROBE_SECONDS)
    response.raise_for_status()
    models = ", ".join(m.get("id", "?") for m in response.json().get("data", []))
    return Check(f"Model {url}", True, models or "answers")


def _checked(name: str, probe: Callable[..., Check], *args: object) -> Check:
    try:
        return probe(*args)
    except Exception as error:  # any failure is the answer: the part is down
        return Check(name, False, f"unreachable: {str(error)[:200] or type(error).__name__}")


def system_checks() -> list[Check]:
    checks = [_checked("Workers", _workers), _checked("Qdrant", _vectors)]
    checks += [_checked(f"Model {url}", _model, url) for url in _model_urls()]
    return checks


def queue_depths() -> dict[str, int | str]:
    try:
        return dict(_queue_depths())
    except Exception as error:  # the broker is down: say so on the page
        return {"broker": f"unreachable: {error}"}
