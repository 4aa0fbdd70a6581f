"""RFC 7643/7644 conformance: scim2-tester's whole run against a live `manage.py serve`
on loopback. Every check passes, but the ones EXCUSED names, each with its reason."""

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.conftest import dead_url, kb_serve, manage

# (resource type, check, reason it gave): why kb answers otherwise.
EXCUSED = {
    ("User", "check_remove_attribute", "Attribute 'active' was not removed"): (
        "A Django user is active or not: removing `active` leaves it as it was (as a PUT "
        "without it does) rather than unassigned, and a provider deactivates with false."
    ),
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A kb of its own (SQLite) with SCIM on: (base URL, token)."""
    data: Path = tmp_path_factory.mktemp("kb-scim")
    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS", "LLM_"))}
    env.pop("QDRANT_URL", None)
    # No model is needed: a dead endpoint keeps `serve` from starting the local one.
    env.update(KB_DATA_DIR=str(data), KB_SCIM_TOKEN=token, LLM_BASE_URL=dead_url())
    manage(env, "migrate", "--verbosity", "0").check_returncode()
    process, url = kb_serve(env, data)
    yield f"{url}/scim/v2", token
    process.terminate()
    process.wait(30)


def test_scim2_tester_passes_every_check(live):
    base_url, token = live
    with httpx2.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        results = check_server(SyncSCIMClient(http), raise_exceptions=False)
    failed: list[dict[str, Any]] = [
        {"type": r.resource_type, "check": r.title, "status": r.status.name, "reason": r.reason}
        for r in results
        if r.status != Status.SUCCESS
        and (r.resource_type, r.title, (r.reason or "").splitlines()[0]) not in EXCUSED
    ]
    assert failed == []
    excused = {
        (r.resource_type, r.title, (r.reason or "").splitlines()[0])
        for r in results
        if r.status != Status.SUCCESS
    }
    assert excused <= set(EXCUSED)
    passed = [r for r in results if r.status == Status.SUCCESS]
    # Discovery, then create, read, search, replace, PATCH and delete of each type.
    assert len(passed) >= 60
    assert {r.resource_type for r in passed} >= {"User", "Group"}


def test_the_live_server_refuses_a_wrong_token(live):
    base_url, _ = live
    with httpx2.Client(base_url=base_url, headers={"Authorization": "Bearer nope"}) as http:
        response = http.get("/Users")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/scim+json"
