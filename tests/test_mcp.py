"""The MCP server, through the official `mcp` SDK's own client: over real HTTP against
`manage.py serve`, and over stdio against `manage.py mcp`. Tools are listed, search,
fetch, ask and list_collections answer in the token's scope, and each call is audited."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import HOLIDAY, kb_serve, manage

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Confidential: the merger with Globex closes on the ninth of June for 41 million."


def _manage(env: dict[str, str], *args: str, stdin: str = "") -> str:
    done = manage(env, *args, stdin=stdin)
    done.check_returncode()
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, local_llm: str) -> dict[str, Any]:
    """A kb of its own (SQLite, embedded Qdrant): hr holds the holiday policy, finance
    a secret; bob reads hr, charlie finance; a token each."""
    data = tmp_path_factory.mktemp("kb-mcp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS", "LLM_"))}
    env.pop("QDRANT_URL", None)
    env.update(KB_DATA_DIR=str(data), LLM_BASE_URL=local_llm, LLM_MODEL="smollm2-135m")
    _manage(env, "migrate", "--verbosity", "0")
    for user, slug, text in (("bob", "hr", HOLIDAY), ("charlie", "finance", SECRET)):
        _manage(env, "user_create", user, "--password-stdin", stdin=f"{user}-pass-4821")
        _manage(env, "collection_create", slug)
        _manage(env, "member_add", slug, "--user", user, "--role", "reader")
        folder = data / f"in-{slug}"
        folder.mkdir()
        (folder / f"{slug}.txt").write_text(text)
        _manage(env, "ingest_folder", slug, str(folder), "--wait")
    tokens = {}
    for user, slug in (("bob", "hr"), ("charlie", "finance")):
        tokens[user] = _manage(
            env, "token_create", "--user", user, "--collections", slug, "--scope", "read"
        )
    return {"env": env, "data": data, "tokens": tokens}


@pytest.fixture(scope="module")
def server(kb: dict[str, Any]) -> Iterator[subprocess.Popen[bytes]]:
    process, url = kb_serve(kb["env"], kb["data"])
    process.url = url  # type: ignore[attr-defined]
    yield process
    process.terminate()
    process.wait(30)


@pytest.fixture
def served(server: subprocess.Popen[bytes]) -> str:
    return server.url  # type: ignore[attr-defined]


def audited(kb: dict[str, Any]) -> list[tuple[str, str, str]]:
    with sqlite3.connect(kb["data"] / "kb.sqlite3") as db:
        rows = db.execute("SELECT action, actor_type, outcome FROM kb_auditevent ORDER BY seq")
        return [tuple(row) for row in rows]


async def _session_calls(session: ClientSession) -> dict[str, Any]:
    await session.initialize()
    tools = sorted(t.name for t in (await session.list_tools()).tools)
    found = await session.call_tool("search", {"query": "paid holiday days"})
    results = found.structured_content["results"]
    fetched = await session.call_tool("fetch", {"id": results[0]["id"]}) if results else None
    listed = await session.call_tool("list_collections", {})
    answer = await session.call_tool("ask", {"question": "How many days of paid holiday?"})
    refused = await session.call_tool("fetch", {"id": "document:999999"})
    return {
        "tools": tools,
        "results": results,
        "fetched": fetched.structured_content if fetched else None,
        "collections": [c["slug"] for c in listed.structured_content["collections"]],
        "answer": answer.structured_content,
        "refused": refused.is_error,
    }


def _over_http(url: str, token: str, **headers: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        headers["Authorization"] = f"Bearer {token}"
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await _session_calls(session)

    return anyio.run(run)


def test_over_http_the_tools_answer_in_the_tokens_scope_and_are_audited(kb, served):
    before = len(audited(kb))
    bob = _over_http(served, kb["tokens"]["bob"])
    assert bob["tools"] == ["ask", "fetch", "list_collections", "search"]
    assert bob["results"] and bob["results"][0]["collection"] == "hr"
    assert "twenty-eight days" in bob["fetched"]["text"]
    assert bob["collections"] == ["hr"] and bob["refused"]
    assert bob["answer"]["answer"] and "Globex" not in json.dumps(bob)
    charlie = _over_http(served, kb["tokens"]["charlie"])
    assert charlie["collections"] == ["finance"]
    assert all(r["collection"] == "finance" for r in charlie["results"])
    assert "twenty-eight" not in json.dumps(charlie)
    actions = [(a, t) for a, t, _ in audited(kb)[before:]]
    for action in ("search", "passage.read", "collection.list", "ask"):
        assert actions.count((action, "token")) >= 2, (action, actions)


def test_over_http_a_bad_token_is_refused_before_any_mcp_message(kb, served):
    request = urllib.request.Request(  # noqa: S310 (our own server)
        f"{served}/mcp",
        data=b"{}",
        headers={"Authorization": "Bearer kb_nothere_0123", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["code"] == "unauthenticated"
    assert ("auth.token_failed", "anonymous", "denied") in audited(kb)


def _access_lines(kb: dict[str, Any], request_id: str) -> list[str]:
    """The server's access lines for `request_id`, waiting a moment for the line written
    after the response."""
    for _ in range(50):
        log = (kb["data"] / "server.log").read_text().splitlines()
        if lines := [line for line in log if f" {request_id} kb.access: " in line]:
            return lines
        time.sleep(0.1)
    return []


def test_each_request_has_one_access_line_with_the_id_its_audit_rows_hold(kb, served):
    before = len(audited(kb))
    _over_http(
        served, kb["tokens"]["bob"], **{"X-Request-ID": "agent-run-0042", "User-Agent": "agent/7"}
    )
    with sqlite3.connect(kb["data"] / "kb.sqlite3") as db:
        rows = db.execute(
            "SELECT action, request_id, user_agent, client_ip FROM kb_auditevent WHERE seq > ?",
            (before,),
        ).fetchall()
    assert {action for action, *_ in rows} >= {"search", "passage.read", "collection.list", "ask"}
    assert {tuple(row[1:]) for row in rows} == {("agent-run-0042", "agent/7", "127.0.0.1")}
    mcp_lines = _access_lines(kb, "agent-run-0042")
    assert any(
        line.endswith(' "POST /mcp" 200') for line in (s.rsplit(" ", 2)[0] for s in mcp_lines)
    )
    assert all(re.search(r'"(POST|GET|DELETE) /mcp" \d{3} [0-9.]+ ms$', s) for s in mcp_lines)

    request = urllib.request.Request(  # noqa: S310 (our own server)
        f"{served}/api/v1/search?note=private-words",
        data=json.dumps({"query": "paid holiday"}).encode(),
        headers={
            "Authorization": f"Bearer {kb['tokens']['bob']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        request_id = response.headers["X-Request-ID"]
    [line] = _access_lines(kb, request_id)
    assert line.endswith(" ms") and '"POST /api/v1/search" 200' in line
    with sqlite3.connect(kb["data"] / "kb.sqlite3") as db:
        (audit_id,) = db.execute(
            "SELECT request_id FROM kb_auditevent ORDER BY seq DESC"
        ).fetchone()
    assert audit_id == request_id
    log = (kb["data"] / "server.log").read_text()
    assert "private-words" not in log and 'HTTP/1.1" 200' not in log  # nor uvicorn's own line


def readme_examples() -> list[tuple[str, str]]:
    """(language, code) of each example under the README's "Use from another service"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use from another service", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(sh|python)\n(.*?)```", section, flags=re.DOTALL)


def test_the_readmes_examples_for_other_services_run(kb, served):
    examples = readme_examples()
    assert [language for language, _ in examples] == ["sh", "python", "python"]
    env = {**os.environ, "KB_URL": served, "KB_TOKEN": kb["tokens"]["bob"]}
    outputs = []
    for language, code in examples:
        if language == "sh":  # its own placeholders give way to the test's server and token
            code = "\n".join(line for line in code.splitlines() if not line.startswith("export"))
        command = (
            ["bash", "-euo", "pipefail", "-c", code]
            if language == "sh"
            else [sys.executable, "-c", code]
        )
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    curl, openai_client, mcp_client = outputs
    assert '"slug": "hr"' in curl and "twenty-eight" in curl
    assert "/passages/" in openai_client and "holiday" in openai_client
    assert "/passages/" in mcp_client


def test_over_stdio_the_same_tools_answer_as_the_files_token(kb, server, tmp_path):
    # The server above owns the embedded vector engine while it runs: stop it first.
    server.terminate()
    server.wait(30)
    token_file = tmp_path / "token"
    token_file.write_text(kb["tokens"]["bob"] + "\n")
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["manage.py", "mcp", "--token-file", str(token_file)],
        env=kb["env"],
        cwd=str(ROOT),
    )

    async def run() -> dict[str, Any]:
        async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
            return await _session_calls(session)

    bob = anyio.run(run)
    assert bob["collections"] == ["hr"] and "twenty-eight days" in bob["fetched"]["text"]
    assert "Globex" not in json.dumps(bob)
