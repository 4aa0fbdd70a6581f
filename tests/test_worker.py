"""Background work through a real broker and a real worker, outside the request."""

import io
import json
import threading
import time
from typing import Any

import pytest

from ingest.models import DocumentVersion, Stage
from ingest.services import document_upload
from kb.audit import SYSTEM
from tests import files
from tests.conftest import REDIS_URL


def settled(model: Any, pk: int, field: str, ends: tuple[str, ...], seconds: float = 120) -> Any:
    """The row once its `field` is one of `ends` (the worker is done with it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = model.objects.get(pk=pk)
        if getattr(row, field) in ends:
            return row
        time.sleep(0.2)
    raise AssertionError(f"{model.__name__} {pk} still {getattr(row, field)} after {seconds}s")


def wait_for(version_id: int) -> DocumentVersion:
    return settled(DocumentVersion, version_id, "stage", (Stage.READY, Stage.FAILED))


@pytest.fixture
def broker_url(request, audit_head, tmp_path):
    """The Celery app pointed at the given broker."""
    from server.celery import app

    url, options = request.param
    if url == "redis":
        url = REDIS_URL
        options = {"visibility_timeout": 3600, "socket_timeout": 10}  # as in settings
    elif url == "folder://":
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
    from server.worker import worker_start

    worker = worker_start(name="test")
    yield
    worker.stop()


def _forget_connections(app) -> None:
    # Connections are pooled per broker URL; after a switch, make new ones.
    app._pool = None
    app.amqp._producer_pool = None


FOLDER = pytest.param(("folder://", None), id="folder")  # the embedded default's
BROKERS = [pytest.param(("redis", None), marks=pytest.mark.redis, id="redis"), FOLDER]


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
    from server.worker import worker_start

    for _ in range(5):
        worker = worker_start(name="stopping")
        worker.stop()
        assert not any(thread.is_alive() for thread in worker.threads)


def test_the_folder_broker_never_hands_out_half_a_message(tmp_path, monkeypatch):
    # A consumer polls while a producer writes: every message arrives whole, even when
    # the writer is slow (with kombu's own filesystem:// transport, an empty one did).
    import threading

    from kombu import Connection
    from kombu.transport import filesystem

    real_lock = filesystem.lock

    def slow_lock(*args: Any) -> None:
        time.sleep(0.005)  # a busy machine, between creating the file and writing it
        real_lock(*args)

    monkeypatch.setattr(filesystem, "lock", slow_lock)

    folder = str(tmp_path)
    options = {"data_folder_in": folder, "data_folder_out": folder, "polling_interval": 0}
    sent = [{"n": n, "padding": "x" * 200_000} for n in range(100)]
    received: list[int] = []
    errors: list[Exception] = []

    def consume() -> None:
        with Connection("folder://", transport_options=options) as connection:
            channel: Any = connection.default_channel  # kombu's virtual channel
            while len(received) < len(sent) and not errors:
                try:
                    received.append(channel._get("q")["n"])
                except Exception as error:
                    if type(error).__name__ != "Empty":
                        errors.append(error)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection("folder://", transport_options=options) as connection:
        for message in sent:
            producer: Any = connection.default_channel
            producer._put("q", message)
    consumer.join(60)
    assert errors == []
    assert sorted(received) == list(range(100))


def test_the_folder_broker_keeps_each_queue_apart_and_delivers_what_an_older_kb_left(tmp_path):
    # Each queue has a folder: a take reads its own queue's backlog, not every message
    # waiting in the others (bench/ingest_many.py). A message written in the shared
    # folder before this layout is still delivered, in order.
    from kombu import Connection

    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    (tmp_path / "1_left-before.ingest.msg").write_text(json.dumps({"n": 0}))
    with Connection("folder://", transport_options=options) as connection:
        channel: Any = connection.default_channel
        for n in (1, 2):
            channel._put("ingest", {"n": n})
        channel._put("embed", {"n": 9})
        assert sorted(p.name for p in tmp_path.glob("*.msg")) == []
        assert len(list((tmp_path / "ingest").glob("*.msg"))) == 3
        assert (channel._size("ingest"), channel._size("embed")) == (3, 1)
        taken = [channel._get("ingest")["n"] for _ in range(3)]
        assert sorted(taken) == [0, 1, 2] and taken.index(1) < taken.index(2)
        assert channel._size("ingest") == 0
        assert channel._purge("embed") == 1
        assert list(tmp_path.rglob("*.msg")) == []


def test_an_idle_folder_consumer_polls_less_and_less_often(tmp_path, monkeypatch):
    # Three consumers polling every 50 ms cost 15 ms of CPU a second while kb was idle.
    from kombu import Connection, Consumer, Queue

    from server import broker

    polls = []
    real_get = broker.Channel._get

    def counted(self: Any, queue: str, timeout: float | None = None) -> Any:
        polls.append(time.monotonic())
        return real_get(self, queue, timeout)

    monkeypatch.setattr(broker.Channel, "_get", counted)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    with (
        Connection("folder://", transport_options={**options, "polling_interval": 0.05}) as c,
        Consumer(c.default_channel, queues=[Queue("q")], callbacks=[lambda *a: None]),
        pytest.raises(TimeoutError),
    ):
        c.drain_events(timeout=3)
    # 0.05 s, then twice as long each time up to a second: 7 polls where there were 60.
    assert len(polls) <= 10


def test_a_backed_off_folder_consumer_wakes_at_once_for_a_put_or_a_freed_slot(
    tmp_path, monkeypatch
):
    # The embedded default's messages are put, and acknowledged, by the process that
    # consumes them: neither waits for the consumer's next poll.
    from kombu import Connection, Consumer, Producer, Queue

    from server import broker

    monkeypatch.setattr(broker, "IDLE_POLL_SECONDS", 60.0)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    received: list[Any] = []
    with Connection("folder://", transport_options={**options, "polling_interval": 5}) as c:
        consumer = Consumer(
            c.default_channel, queues=[Queue("q")], callbacks=[lambda _, m: received.append(m)]
        )
        consumer.qos(prefetch_count=1)
        with consumer, Connection("folder://", transport_options=options) as producer:
            put = Producer(producer).publish
            threading.Timer(0.5, put, ({"n": 1},), {"routing_key": "q"}).start()
            started = time.monotonic()
            c.drain_events(timeout=10)
            assert received and time.monotonic() - started < 3, "a put waited for a poll"
            put({"n": 2}, routing_key="q")
            with pytest.raises(TimeoutError):  # the first is held (prefetch 1)
                c.drain_events(timeout=1)
            threading.Timer(0.5, received[0].ack).start()
            started = time.monotonic()
            c.drain_events(timeout=10)
            assert len(received) == 2
            assert time.monotonic() - started < 3, "a freed slot waited for the next poll"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
def test_a_new_owner_skips_the_messages_a_killed_one_left(broker_url, hr, monkeypatch):
    # A killed owner leaves a message for each document it had not reached; the database
    # says most are done since (here: marked so). The next owner reads none of those:
    # it queues each unfinished version once, from the database.
    from ingest import pipeline
    from server.runtime import background_work

    def upload(name: str) -> int:
        stream = io.BytesIO(f"A note called {name}.\n".encode())
        (result,) = document_upload(collection=hr, actor=SYSTEM, path=name, stream=stream)
        assert result.version is not None
        return result.version.pk

    done = [upload(f"done-{n}.txt") for n in range(20)]
    pending = upload("pending.txt")
    DocumentVersion.objects.filter(pk__in=done).update(stage=Stage.READY)
    parsed: list[int] = []
    real_parse = pipeline.version_parse

    def parse(*, version_id: int) -> None:
        parsed.append(version_id)
        real_parse(version_id=version_id)

    monkeypatch.setattr(pipeline, "version_parse", parse)
    with background_work() as work:
        assert work.owner
        assert wait_for(pending).stage == Stage.READY
    assert parsed == [pending]


@pytest.mark.parametrize("broker_url", [FOLDER], indirect=True)
def test_documents_are_processed_while_an_evaluation_run_waits_on_the_model(
    broker, hr, alice, monkeypatch
):
    # A run asks the model for minutes; it has a queue and a thread of its own, so an
    # upload meanwhile is parsed and embedded as usual. The run is held on its first
    # question until the document is ready.
    from retrieval import evaluation, services
    from retrieval.golden import GoldenItem
    from retrieval.models import EvaluationRun, RunStatus

    asking, release = threading.Event(), threading.Event()
    real_answer = services.question_answer

    def held_answer(**kwargs: Any) -> Any:
        asking.set()
        release.wait()
        return real_answer(**kwargs)

    monkeypatch.setattr(services, "question_answer", held_answer)
    (run,) = evaluation.evaluation_start(
        collection=hr,
        user=alice,
        profiles=[],
        actor=SYSTEM,
        golden=[GoldenItem("How many days of paid holiday?", "Twenty-eight.")],
        background=True,
    )
    try:
        assert asking.wait(120), "the worker never started the run"
        stream = io.BytesIO(b"Every employee receives twenty-eight days of paid holiday.")
        (result,) = document_upload(collection=hr, actor=SYSTEM, path="a.txt", stream=stream)
        assert result.version is not None
        assert wait_for(result.version.pk).stage == Stage.READY
        assert EvaluationRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
    finally:
        release.set()
    finished = (RunStatus.DONE, RunStatus.FAILED)
    assert settled(EvaluationRun, run.pk, "status", finished).status == RunStatus.DONE
