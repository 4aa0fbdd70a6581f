"""`manage.py backup` and `manage.py restore` on the embedded default: a backup of a live
`manage.py serve` (real worker, vector engine and embedding model) restores into a new
data folder with every document, passage, vector, conversation and audit row; the chain
verifies and the same search answers the same. Damaged backups and occupied folders are
refused with a clear message, and leave nothing behind."""

import http.cookiejar
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.data_lock import writing
from ingest.vectors.edge import shard_counts
from tests.conftest import HOLIDAY, PARKING, dead_url, kb_serve, manage

PASSWORD = "alice-pass-4821"
QUERY = {"query": "how many days of paid holiday", "top_k": 5}
# What must come back, row for row.
ROWS = {
    "documents": "SELECT id, title, path, live_version_id FROM ingest_document ORDER BY id",
    "passages": "SELECT id, version_id, text, point_id FROM ingest_chunk ORDER BY id",
    "conversations": "SELECT id, user_id, title FROM retrieval_conversation ORDER BY id",
    "exchanges": "SELECT query_id, question, answer, error FROM retrieval_exchange ORDER BY id",
    "tokens": "SELECT prefix, secret_hash FROM kb_apitoken ORDER BY id",
    "audit": "SELECT seq, hash, action FROM kb_auditevent ORDER BY seq",
}


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return (done.stdout.strip().splitlines() or [""])[-1]


def kb_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS", "LLM_"))}
    env.pop("QDRANT_URL", None)
    # The model is down: a question still makes its conversation and audit row.
    env.update(KB_DATA_DIR=str(data), LLM_BASE_URL=dead_url())
    return env


def rows(data: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(data / "kb.sqlite3") as db:
        return {name: db.execute(sql).fetchall() for name, sql in ROWS.items()}


def search(url: str, token: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 (our own server)
        f"{url}/api/v1/search",
        data=json.dumps(QUERY).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return [
            {k: hit[k] for k in ("chunk_id", "document_id", "text", "score")}
            for hit in json.load(response)["results"]
        ]


def _csrf(jar: http.cookiejar.CookieJar) -> str:
    return str(next(c.value for c in jar if c.name == "csrftoken"))


def ask_in_browser_session(url: str) -> str:
    """Log in as alice and ask on the ask page, as the browser does: a conversation."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/login/", timeout=30).read()
    form = {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": _csrf(jar)}
    opener.open(f"{url}/login/", urllib.parse.urlencode(form).encode(), timeout=30).read()
    question = {"question": "How many days of paid holiday?", "collections": "hr"}
    request = urllib.request.Request(  # noqa: S310 (our own server)
        f"{url}/ask/stream",
        data=urllib.parse.urlencode(question).encode(),
        headers={"X-CSRFToken": _csrf(jar), "Referer": f"{url}/"},
    )
    return opener.open(request, timeout=120).read().decode()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A kb serving its own data folder, with documents ingested through its worker, a
    conversation, an API token and audit rows."""
    data = tmp_path_factory.mktemp("kb-live")
    env = kb_env(data)
    ok(manage(env, "migrate", "--verbosity", "0"))
    ok(manage(env, "user_create", "alice", "--password-stdin", stdin=PASSWORD))
    ok(manage(env, "collection_create", "hr"))
    ok(manage(env, "member_add", "hr", "--user", "alice", "--role", "owner"))
    token = ok(
        manage(env, "token_create", "--user", "alice", "--collections", "hr", "--scope", "read")
    )
    process, url = kb_serve(env, data)
    try:
        folder = tmp_path_factory.mktemp("handbook")
        (folder / "holiday.txt").write_text(HOLIDAY)
        (folder / "parking.txt").write_text(PARKING)
        assert "ready=2" in ok(manage(env, "ingest_folder", "hr", str(folder), "--wait"))
        assert "event: saved" in ask_in_browser_session(url)
        yield {"env": env, "data": data, "url": url, "token": token, "process": process}
    finally:
        if process.poll() is None:
            stop(process)


@pytest.fixture(scope="module")
def backup(live: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Taken while the server runs and owns the vector store."""
    before = rows(live["data"])
    results = search(live["url"], live["token"])
    dest = tmp_path_factory.mktemp("backups") / "kb-backup"
    line = ok(manage(live["env"], "backup", str(dest)))
    assert live["process"].poll() is None  # the server kept its store and kept serving
    return {"dest": dest, "line": line, "before": before, "results": results}


def test_a_live_backup_restores_everything_into_a_new_data_folder(live, backup, tmp_path):
    assert backup["line"].startswith("backup documents=2 passages=2 points=2 files=2 ")
    assert backup["before"]["conversations"] and backup["before"]["exchanges"]
    restored = tmp_path / "restored"
    env = kb_env(restored)
    line = ok(manage(env, "restore", str(backup["dest"])))
    counts = backup["line"].removeprefix("backup ").split(" seconds=")[0]
    assert line == f"restored {counts} into {restored}"

    assert "audit chain intact" in ok(manage(env, "audit_verify"))
    now, back = rows(live["data"]), rows(restored)
    for name in ("documents", "passages", "conversations", "exchanges", "tokens"):
        assert back[name] == backup["before"][name] == now[name], name
    # The live server kept auditing after the backup: the restored chain is its prefix.
    assert len(back["audit"]) >= len(backup["before"]["audit"])
    assert back["audit"] == now["audit"][: len(back["audit"])]
    assert sorted(p.name for p in (restored / "files").iterdir()) == sorted(
        p.name for p in (live["data"] / "files").iterdir()
    )

    process, url = kb_serve(env, restored)
    try:
        assert search(url, live["token"]) == backup["results"]
    finally:
        stop(process)
    stop(live["process"])
    (store,) = (live["data"] / "vectors").iterdir()
    assert shard_counts(restored / "vectors" / store.name) == shard_counts(store) == (2, 2)


def test_restore_refuses_a_folder_that_holds_data(backup, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    env = kb_env(tmp_path / "other")
    done = manage(env, "restore", str(backup["dest"]), "--data-dir", str(occupied))
    assert done.returncode == 1
    assert f"{occupied} is not empty (it holds notes.txt): restore into a new folder" in done.stderr
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _refused(backup: Path, tmp_path: Path) -> str:
    target = tmp_path / "target"
    done = manage(kb_env(target), "restore", str(backup))
    assert done.returncode == 1
    # Nothing restored, no half-restored folder beside it: only what settings make.
    assert sorted(p.name for p in target.iterdir()) == ["broker", "secret_key", "static"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    return done.stderr.strip()


def test_restore_refuses_a_damaged_backup_and_says_which_file(backup, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(backup["dest"], damaged)
    (stored,) = list((damaged / "files").iterdir())[:1]
    stored.write_bytes(stored.read_bytes()[:-1] + b"!")
    message = _refused(damaged, tmp_path)
    assert message == (
        f"CommandError: the backup in {damaged} is damaged: files/{stored.name} does not "
        "match its checksum; restore another backup"
    )


def test_restore_refuses_a_backup_that_was_cut_off(backup, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(backup["dest"], cut)
    (cut / "manifest.json").unlink()
    assert "is not a whole kb backup: it has no manifest.json" in _refused(cut, tmp_path)
    shutil.copytree(backup["dest"], cut, dirs_exist_ok=True)
    (cut / "kb.sqlite3").unlink()
    assert f"the backup in {cut} is damaged: kb.sqlite3 is missing" in _refused(cut, tmp_path)


def test_backup_says_it_covers_the_embedded_default_only(tmp_path):
    env = {**kb_env(tmp_path / "data"), "DATABASE_URL": "postgres://kb@127.0.0.1:5432/kb"}
    done = manage(env, "backup", str(tmp_path / "backup"))
    assert done.returncode == 1
    assert "cover the embedded default" in done.stderr and "Backup and restore" in done.stderr
    assert not (tmp_path / "backup").exists()


def test_a_backup_waits_for_the_vector_write_under_way(data_dir, tmp_path):
    """The owner holds the write lock for each write: the backup copies between them."""
    env = kb_env(data_dir)
    ok(manage(env, "migrate", "--verbosity", "0"))
    dest = tmp_path.parent / f"{tmp_path.name}-backup"
    with writing():
        running = subprocess.Popen(
            [sys.executable, "manage.py", "backup", str(dest)],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(4)
        assert running.poll() is None and not dest.exists()
    assert running.wait(60) == 0
    assert json.loads((dest / "manifest.json").read_text())["counts"]["documents"] == 0
    shutil.rmtree(dest)
