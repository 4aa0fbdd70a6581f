import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from ingest.services import document_upload
from kb.audit import SYSTEM
from kb.models import Collection, Role
from kb.principal import Principal
from kb.services import collection_create, member_add, user_create

REQUIRE_SERVICES = os.environ.get("KB_REQUIRE_SERVICES") == "1"


ON_POSTGRES = "postgresql" in settings.DATABASES["default"]["ENGINE"]
REDIS_URL = os.environ.get("KB_TEST_REDIS_URL", "")


def pytest_configure(config: pytest.Config) -> None:
    # In CI a missing service fails the run; it never turns into quiet skips.
    if REQUIRE_SERVICES and not (ON_POSTGRES and REDIS_URL):
        raise pytest.UsageError(
            "KB_REQUIRE_SERVICES=1 but PostgreSQL or Redis is not configured for the tests: "
            "run them through `make test` (scripts/test_services.py)"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, available in (("postgres", ON_POSTGRES), ("redis", bool(REDIS_URL))):
            if item.get_closest_marker(marker) and not available:
                item.add_marker(pytest.mark.skip(f"needs {marker}, which is unreachable"))


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # PBKDF2's deliberate slowness would be most of the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    # Rate limits and login throttles count in the cache: each test starts at zero.
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Each test gets its own files and vector store."""
    from ingest.vectors import vector_store_close

    settings.KB_DATA_DIR = tmp_path
    yield tmp_path
    vector_store_close()


@pytest.fixture
def audit_head(transactional_db) -> None:
    """Transactional tests empty every table afterwards, the migration's row included."""
    from kb.audit import GENESIS
    from kb.models import AuditChainHead

    AuditChainHead.objects.get_or_create(pk=1, defaults={"seq": 0, "hash": GENESIS})


@pytest.fixture
def pipeline(audit_head):
    """Background work runs at once, in this process, as each transaction commits."""
    from server.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def alice(db: None) -> User:
    return user_create(username="alice", password="alice-pass-123", actor=SYSTEM)[0]


@pytest.fixture
def bob(db: None) -> User:
    return user_create(username="bob", password="bob-pass-123", actor=SYSTEM)[0]


@pytest.fixture
def charlie(db: None) -> User:
    return user_create(username="charlie", password="charlie-pass-123", actor=SYSTEM)[0]


@pytest.fixture
def hr(alice: User, bob: User, charlie: User) -> Collection:
    """alice owns hr, bob reads it, charlie is an outsider."""
    collection = collection_create(slug="hr", name="Human resources", actor=SYSTEM)[0]
    member_add(collection=collection, user=alice, role=Role.OWNER, actor=SYSTEM)
    member_add(collection=collection, user=bob, role=Role.READER, actor=SYSTEM)
    return collection


@pytest.fixture
def eng(alice: User) -> Collection:
    collection = collection_create(slug="eng", name="Engineering", actor=SYSTEM)[0]
    member_add(collection=collection, user=alice, role=Role.EDITOR, actor=SYSTEM)
    return collection


# Debian's chromium, driven by playwright (its own browser download is never used), kept
# off the network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def principal(user: User) -> Principal:
    return Principal(user=user)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports."""
    while True:
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def embedded_env(data: Path, **settings: str) -> dict[str, str]:
    """This environment for a kb of its own in `data` (SQLite, the embedded vector store,
    the folder broker: none of the tests' services), with `settings` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS", "LLM_"))}
    env.pop("QDRANT_URL", None)
    return env | {"KB_DATA_DIR": str(data), **settings}


def manage(
    env: dict[str, str], *args: str, stdin: str = "", timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """`manage.py` in a process of its own, with this environment (killed past `timeout`
    seconds: a command that waits on a server)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        input=stdin,
        text=True,
        capture_output=True,
        check=False,
        timeout=timeout,
    )


def kb_serve(env: dict[str, str], data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`manage.py serve` on its own port, once /healthz answers: (process, url)."""

    port = free_port()
    log = (data / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)  # noqa: S310 (our own server)
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)


@pytest.fixture(scope="session")
def local_llm():
    """The real bundled model behind llama.cpp's OpenAI-compatible server."""
    from retrieval.local_llm import LocalLlm

    server = LocalLlm(free_port())
    yield server.url
    server.stop()


@pytest.fixture
def llm_at(settings):
    """Point the default model pool at these base URLs."""
    from retrieval import llm

    def point(*urls: str) -> None:
        settings.LLM_BASE_URLS = list(urls)
        settings.LLM_MODEL = "smollm2-135m"
        llm._pools.clear()

    yield point
    llm._pools.clear()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


# Two small documents in hr, ingested for real, for search and answer tests.
HOLIDAY = (
    "Holiday policy. Every employee receives twenty-eight days of paid holiday per year. "
    "Unused holiday days can be carried over until the end of March."
)
PARKING = "Parking policy. The staff car park is behind building C and opens at 6 am."


def add(collection, name: str, text: str):
    (result,) = document_upload(
        collection=collection, actor=SYSTEM, path=name, stream=io.BytesIO(text.encode())
    )
    return result.document


@pytest.fixture
def docs(pipeline, hr):
    return {"holiday": add(hr, "holiday.txt", HOLIDAY), "parking": add(hr, "parking.txt", PARKING)}


async def collect(stream) -> bytes:
    """Events are served as they come (an async iterator, as under ASGI)."""
    return b"".join([chunk async for chunk in stream])


def events_of(response: Any) -> list[tuple[str, Any]]:
    """A streamed response's server-sent events: (name, data) pairs."""
    raw = async_to_sync(collect)(response.streaming_content).decode()
    parsed = []
    for block in raw.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        parsed.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return parsed
