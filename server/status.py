"""Is every part of kb up, and how much work is waiting: for the admins' status page,
/readyz and the metrics scrape. Each probe is bounded in time and they run together."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings
from django.db import DatabaseError, connection

from ingest.vectors import vector_store
from kb.models import ModelProfile
from server import broker
from server.worker import QUEUES, inprocess_workers_alive

PROBE_SECONDS = 2.0


Probe = tuple[str, Callable[..., "Check"], tuple[object, ...]]  # name, probe, its arguments


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
    # The folder broker: one file per waiting message, in its queue's folder.
    folder = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    return {queue: len(broker.messages(broker.queue_folder(folder, queue))) for queue in QUEUES}


def _database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return Check("Database", True, connection.vendor)


def _broker() -> Check:
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=PROBE_SECONDS, socket_connect_timeout=PROBE_SECONDS
        )
        client.ping()
        return Check("Broker", True, "redis answers")
    folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
    if not folder.is_dir():
        raise FileNotFoundError(f"no broker folder at {folder}")
    return Check("Broker", True, f"the folder {folder}")


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
    try:
        profiles = list(ModelProfile.objects.all())
    except DatabaseError:
        return urls  # the database's own check says it is down
    for profile in profiles:
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


def _in_parallel(probes: list[Probe]) -> list[Check]:
    """Each probe in its own thread, so the answer takes as long as the slowest one."""
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        futures = [pool.submit(_checked, name, probe, *args) for name, probe, args in probes]
        return [future.result() for future in futures]


def _probes() -> list[Probe]:
    probes: list[Probe] = [("Broker", _broker, ()), ("Qdrant", _vectors, ())]
    return probes + [(f"Model {url}", _model, (url,)) for url in _model_urls()]


def readiness_checks() -> list[Check]:
    """Database, broker, vector store and each model endpoint (the default model's first).
    The database's in the calling thread: a connection belongs to the thread that opens it."""
    return [_checked("Database", _database), *_in_parallel(_probes())]


def ready(checks: list[Check]) -> bool:
    """Ready: the database, the broker, the vector store and at least one endpoint of the
    default model answer (kb fails over between them)."""
    default_models = {f"Model {url}" for url in settings.LLM_BASE_URLS}
    needed = [c for c in checks if c.name in ("Database", "Broker", "Qdrant")]
    return all(c.ok for c in needed) and any(c.ok for c in checks if c.name in default_models)


def system_checks() -> list[Check]:
    """What /readyz checks, and the workers (a Celery ping, for the status page only)."""
    return [_checked("Database", _database), *_in_parallel([("Workers", _workers, ()), *_probes()])]


def queue_depths() -> dict[str, int | str]:
    try:
        return dict(_queue_depths())
    except Exception as error:  # the broker is down: say so on the page
        return {"broker": f"unreachable: {error}"}
