"""Watching kb: /healthz, /readyz, /metrics, JSON logs with the audit row's request id,
and `check --deploy` with production settings."""

import copy
import io
import ipaddress
import json
import logging.config
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from kb.models import AuditEvent
from tests.conftest import REDIS_URL, dead_url, logged_in

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = "203.0.113.7"  # TEST-NET-3: never a loopback or an allowed network


def post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def scrape(client=None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def loopback_only(monkeypatch):
    """Fails the test on a connection or name lookup off this machine."""
    seen: list[str] = []
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def watched_connect(sock, address):
        seen.append(str(address[0]) if isinstance(address, tuple) else "unix")
        return connect(sock, address)

    def watched_lookup(host, *args, **kwargs):
        seen.append(str(host))
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", watched_connect)
    monkeypatch.setattr(socket, "getaddrinfo", watched_lookup)
    yield seen
    assert set(seen) <= {"127.0.0.1", "::1", "localhost", "unix"}, seen


@pytest.mark.redis
def test_readyz_reports_each_part(db, settings, local_llm, llm_at, loopback_only):
    llm_at(local_llm)
    settings.REDIS_URL = REDIS_URL
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ready"] is True
    checks = {c["name"]: c for c in body["checks"]}
    assert list(checks) == ["Database", "Broker", "Qdrant", f"Model {local_llm}"]
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["Database"]["detail"] == "postgresql"
    assert checks["Broker"]["detail"] == "redis answers"
    assert "smollm2" in checks[f"Model {local_llm}"]["detail"]


def test_readyz_is_503_when_the_model_is_down(db, llm_at, loopback_only):
    down = dead_url()  # a closed port on loopback
    llm_at(down)
    response = Client().get("/readyz")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks[f"Model {down}"]["ok"] is False
    assert checks[f"Model {down}"]["detail"].startswith("unreachable:")
    assert checks["Database"]["ok"] and checks["Broker"]["ok"] and checks["Qdrant"]["ok"]
    # From outside, which parts are up, but not the addresses or the errors.
    outside = Client(REMOTE_ADDR=OUTSIDE).get("/readyz")
    assert outside.status_code == 503
    assert outside.json()["checks"] == [
        {"name": "Database", "ok": True},
        {"name": "Broker", "ok": True},
        {"name": "Qdrant", "ok": True},
        {"name": "Model 1", "ok": False},
    ]
    assert down.split("//")[1] not in outside.content.decode()


def test_one_model_endpoint_down_of_two_is_still_ready(db, local_llm, llm_at):
    llm_at(dead_url(), local_llm)
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert [c["ok"] for c in response.json()["checks"]] == [True, True, True, False, True]


def test_metrics_count_a_real_search_and_question(docs, bob, local_llm, llm_at, loopback_only):
    llm_at(local_llm)
    before = scrape()
    client = logged_in(bob)
    assert post(client, "/api/v1/search", {"query": "paid holiday"}).status_code == 200
    asked = post(client, "/api/v1/ask", {"question": "When does the staff car park open?"})
    assert asked.status_code == 200 and asked.json()["refused"] is False
    denied = post(client, "/api/v1/search", {"query": "x", "collections": ["nope"]})
    assert denied.status_code == 404
    after = scrape()

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("kb_queries_total", action="search", outcome="ok") == 1
    assert grew("kb_queries_total", action="search", outcome="denied") == 1
    assert grew("kb_queries_total", action="ask", outcome="ok") == 1
    assert grew("kb_answer_first_token_seconds_count") == 1
    assert grew("kb_answer_tokens_total") >= 1
    # Latency by route pattern, not by the path asked for.
    assert grew("kb_http_request_seconds_count", route="api/v1/search", method="POST") == 2
    assert grew("kb_http_request_seconds_count", route="api/v1/ask", method="POST") == 1
    assert not any("nope" in str(labels) for _, labels in after)
    # Two documents went through every stage (the fixture ingested them for real).
    for stage in ("parse", "chunk", "embed", "index", "go_live"):
        assert value(after, "kb_ingest_stage_seconds_count", stage=stage) >= 1, stage
    # Read at scrape time.
    assert value(after, "kb_documents", status="ready") == 2
    assert value(after, "kb_documents", status="failed") == 0
    assert ("kb_queue_depth", (("queue", "embed"),)) in after


def test_a_failed_request_counts_as_an_error(docs, bob, llm_at):
    llm_at(dead_url())
    before = scrape()
    response = post(logged_in(bob), "/api/v1/ask", {"question": "How many days of paid holiday?"})
    assert response.status_code == 503
    after = scrape()
    assert (
        value(after, "kb_errors_total", source="request")
        - value(before, "kb_errors_total", source="request")
        == 1
    )
    assert value(after, "kb_errors_total", source="model") > value(
        before, "kb_errors_total", source="model"
    )
    assert value(after, "kb_queries_total", action="ask", outcome="error") > value(
        before, "kb_queries_total", action="ask", outcome="error"
    )


def test_metrics_are_refused_from_outside_and_served_with_the_token(db, settings):
    settings.KB_METRICS_TOKEN = "metrics-secret"
    outside = Client(REMOTE_ADDR=OUTSIDE)
    refused = outside.get("/metrics")
    assert refused.status_code == 403
    assert b"KB_METRICS_TOKEN" in refused.content and b"kb_" not in refused.content
    assert outside.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    allowed = outside.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret")
    assert allowed.status_code == 200 and b"kb_documents" in allowed.content
    # An allowed network needs no token.
    settings.KB_METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("203.0.113.0/24")]
    assert outside.get("/metrics").status_code == 200
    assert Client().get("/metrics").status_code == 403  # loopback is no longer in the list


def test_multiprocess_mode_adds_up_every_process(db, settings, tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    code = "from kb import metrics; metrics.QUERIES.labels('search', 'ok').inc({})"
    for n in (2, 3):  # two worker processes, gone before the scrape
        subprocess.run([sys.executable, "-c", code.format(n)], cwd=ROOT, env=env, check=True)
    assert len(list(folder.glob("counter_*.db"))) == 2
    settings.PROMETHEUS_MULTIPROC_DIR = str(folder)
    assert value(scrape(), "kb_queries_total", action="search", outcome="ok") == 5


@pytest.fixture
def json_log():
    """The project's LOGGING as production runs it (KB_LOG_FORMAT=json), into a buffer."""
    config: dict[str, Any] = copy.deepcopy(django_settings.LOGGING)
    config["handlers"]["console"]["formatter"] = "json"
    config["handlers"]["console"]["stream"] = "ext://tests.test_observability.LOG"
    LOG.seek(0)
    LOG.truncate()
    logging.config.dictConfig(config)
    yield LOG
    logging.config.dictConfig(django_settings.LOGGING)


LOG = io.StringIO()


def test_a_log_line_carries_the_request_id_of_the_audit_row(docs, bob, llm_at, json_log):
    llm_at(dead_url())
    response = post(logged_in(bob), "/api/v1/ask", {"question": "How many days of paid holiday?"})
    assert response.status_code == 503
    request_id = response["X-Request-ID"]
    event = AuditEvent.objects.filter(action="ask").latest("seq")
    assert event.request_id == request_id
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    warning = next(line for line in lines if line["logger"] == "retrieval.api")
    assert warning["request_id"] == request_id and warning["level"] == "WARNING"
    assert event.detail["query_id"] in warning["message"]
    assert {"time", "level", "logger", "message", "request_id"} <= set(warning)
    logging.getLogger("uvicorn.error").info("up", extra={"color_message": "\x1b[36mup\x1b[0m"})
    assert "color_message" not in json.loads(json_log.getvalue().splitlines()[-1])
    logging.getLogger("kb").warning("outside any request")
    assert json.loads(json_log.getvalue().splitlines()[-1])["request_id"] == "-"


def test_probes_and_scrape_are_not_redirected_to_https(db, settings, llm_at):
    llm_at(dead_url())
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/login/").status_code == 301
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code in (200, 503), path


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "KB_DATA_DIR": str(tmp_path),
        "DEBUG": "false",
        "SECRET_KEY": "x7" * 30 + "production-like-key",
        "ALLOWED_HOSTS": "kb.example.com",
        "SECURE_COOKIES": "true",
        "KB_TRUST_X_FORWARDED_FOR": "true",
        "KB_LOG_FORMAT": "json",
    }
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout


def test_the_grafana_dashboard_reads_only_metrics_kb_serves(db):
    dashboard = json.loads((ROOT / "compose" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bkb_[a-z_]+", expr)
    }
    text = Client().get("/metrics").content.decode()
    served = {family.name for family in text_string_to_metric_families(text)}
    assert len(used) == 8 and used <= served, used - served
