"""What kb counts for Prometheus (served at /metrics by server.monitoring).

Defined here, at the ground floor, so that retrieval and ingest record where the work
happens. With PROMETHEUS_MULTIPROC_DIR set before start, each process writes its values
to files there and the scrape adds them up (prometheus_client's multiprocess mode).
Gauges that describe the whole system (queue depth, documents by status) are read at
scrape time instead (server.monitoring).
"""

import time

from prometheus_client import Counter, Histogram

# Web latency by route pattern, never by raw path, so the number of series stays bounded.
REQUEST_SECONDS = Histogram(
    "kb_http_request_seconds",
    "Time to answer an HTTP request (to the first byte of a streamed one), by route.",
    ["route", "method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUERIES = Counter(
    "kb_queries_total",
    "Searches and questions, by action (search, ask) and outcome (ok, refused, denied, error).",
    ["action", "outcome"],
)
FIRST_TOKEN_SECONDS = Histogram(
    "kb_answer_first_token_seconds",
    "From the question's arrival to the model's first token.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
TOKENS_GENERATED = Counter("kb_answer_tokens_total", "Tokens the models generated in answers.")
INGEST_STAGE_SECONDS = Histogram(
    "kb_ingest_stage_seconds",
    "Time of one ingest step: parse, chunk, embed and index (per call of up to 512 "
    "passages), go_live.",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
ERRORS = Counter(
    "kb_errors_total",
    "Failures: request (a 5xx answer), task (a background task raised), model (no model "
    "endpoint answered a question).",
    ["source"],
)


class IngestSteps:
    """Consecutive ingest steps timed from one start: `done(stage)` ends the step under way
    and starts the next."""

    def __init__(self) -> None:
        self.since = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        INGEST_STAGE_SECONDS.labels(stage).observe(now - self.since)
        self.since = now
