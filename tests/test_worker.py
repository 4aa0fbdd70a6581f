"""Background work through a real broker and a real worker, outside the request."""

import io
import time

import pytest

from ingest.models import DocumentVersion, Stage
from ingest.services import document_upload
from kb.audit import SYSTEM
from tests import files
from tests.conftest import REDIS_URL


def wait_for(version_id: int, seconds: float = 120) -> DocumentVersion:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        version = DocumentVersion.objects.get(pk=version_id)
        if version.stage in (Stage.READY, Stage.FAILED):
            return version
        time.sleep(0.2)
    raise AssertionError(f"version {version_id} still {version.stage} after {seconds}s")


@pytest.fixture
def broker_url(request, audit_head, tmp_path):
    """The Celery app pointed at the given broker."""
    from kb.celery import app

    url, options = request.param
    if url == "redis":
        url = REDIS_URL
        options = {"visibility_timeout": 3600}
    elif url == "filesystem://":
        folder = tmp_path / "broker"
        folder.mkdir()
        options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
            "polling_interval": 0.05,
        }
    previous = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.update(broker_url=url, broker_transport_options=options)
    _forget_connections(app)
    yield
    app.conf.update(broker_url=previous[0], broker_transport_options=previous[1])
    _forget_connections(app)


@pytest.fixture
def broker(broker_url):
    """... with a worker thread consuming it."""
    from kb.worker import worker_start

    worker = worker_start(name="test")
    yield
    worker.stop()


def _forget_connections(app) -> None:
    # Connections are pooled per broker URL; after a switch, make new ones.
    app._pool = None
    app.amqp._producer_pool = None


BROKERS = [
    pytest.param(("redis", None), marks=pytest.mark.redis, id="redis"),
    pytest.param(("filesystem://", None), id="filesystem"),
]


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
def test_upload_is_processed_by_the_worker_not_the_request(broker, hr, tmp_path):
    data = files.make("md", tmp_path).read_bytes()
    (result,) = document_upload(collection=hr, actor=SYSTEM, path="a.md", stream=io.BytesIO(data))
    assert result.version is not None
    # The upload returns at once; the worker thread does the work afterwards.
    assert DocumentVersion.objects.get(pk=result.version.pk).stage != Stage.READY
    version = wait_for(result.version.pk)
    assert version.stage == Stage.READY, version.error
    assert version.chunk_count >= 1


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
def test_the_worker_stops_every_time(broker_url):
    # serve and ingest_folder stop their worker on the way out; a stop that hangs
    # would keep the process from ending.
    from kb.worker import worker_start

    for _ in range(5):
        worker = worker_start(name="stopping")
        worker.stop()
        assert not any(thread.is_alive() for thread in worker.threads)
