"""What an operator watches: /healthz (the process answers), /readyz (each part, 200 or
503), /metrics (Prometheus text, for allowed networks or the metrics token), and the
request latency the metrics show."""

import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ingest.models import Stage
from ingest.selectors import document_status_counts
from kb import metrics, request_context
from server import status

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def readiness(request: HttpRequest) -> HttpResponse:
    """Each part with ok and detail; 200 when kb can serve, 503 otherwise. Callers outside
    the metrics' networks (without its token) see only which parts are up, not the
    addresses and errors."""
    checks = status.readiness_checks()
    if _watcher(request):
        parts = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]
    else:
        parts = [{"name": c.name, "ok": c.ok} for c in checks if not c.name.startswith("Model ")]
        models = [c for c in checks if c.name.startswith("Model ")]
        parts += [{"name": f"Model {n}", "ok": c.ok} for n, c in enumerate(models, 1)]
    ready = status.ready(checks)
    return JsonResponse({"ready": ready, "checks": parts}, status=200 if ready else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _watcher(request):
        return HttpResponse(
            "Metrics are served to KB_METRICS_ALLOWED_NETWORKS, or with KB_METRICS_TOKEN "
            "as a bearer token.\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(
        generate_latest(_processes()) + generate_latest(_SYSTEM), content_type=CONTENT_TYPE_LATEST
    )


def _processes() -> CollectorRegistry:
    """This process's metrics, or every process's (multiprocess mode: web and workers
    write their values to files in PROMETHEUS_MULTIPROC_DIR, added up here)."""
    if not settings.PROMETHEUS_MULTIPROC_DIR:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)  # type: ignore[no-untyped-call]
    return registry


def _watcher(request: HttpRequest) -> bool:
    """From an allowed network, or holding the metrics token."""
    token = settings.KB_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request_context.current().client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in settings.KB_METRICS_ALLOWED_NETWORKS)


class SystemCollector(Collector):
    """Read at scrape time: the same numbers whichever process answers."""

    def collect(self) -> Iterable[Metric]:
        queues = GaugeMetricFamily("kb_queue_depth", "Tasks waiting, by queue.", labels=["queue"])
        for queue, depth in status.queue_depths().items():
            if isinstance(depth, int):  # otherwise the broker is down: /readyz says so
                queues.add_metric([queue], depth)
        yield queues
        documents = GaugeMetricFamily(
            "kb_documents", "Documents by the stage of their newest version.", labels=["status"]
        )
        counts = document_status_counts()
        for stage in Stage.values:
            documents.add_metric([stage], counts.get(stage, 0))
        yield documents


_SYSTEM = CollectorRegistry()
_SYSTEM.register(SystemCollector())


class RequestMetricsMiddleware:
    """Latency by route pattern (`api/v1/documents/<document_id>`, not the path asked
    for), so the series stay few; and 5xx answers counted as errors."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        if match:
            route = match.route
        else:  # WhiteNoise answers before any URL is resolved
            route = "static" if request.path.startswith(settings.STATIC_URL) else "unmatched"
        method = request.method if request.method in METHODS else "other"
        metrics.REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)
        if response.status_code >= 500:
            metrics.ERRORS.labels("request").inc()
        return response
