"""One settings module, read from the environment (see README "Configuration").

Without any variable set, kb runs the embedded default: data under ./var, SQLite,
a broker on the file system, no servers to install.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from pythonjsonlogger.core import RESERVED_ATTRS

from retrieval import local_models
from server.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_secret,
    env_str,
)

# Lets admin classes carry their model's type (admin.ModelAdmin[Collection]).
django_stubs_ext.monkeypatch()

# Nothing in kb phones home: unstructured's analytics and the model hubs stay off.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
# ONNX Runtime looks up its telemetry host from every process that embeds; DO_NOT_TRACK
# does not stop it, this does (tests/test_offline.py counts the lookups).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

BASE_DIR = Path(__file__).resolve().parent.parent
KB_DATA_DIR = Path(env_str("KB_DATA_DIR", str(BASE_DIR / "var"))).resolve()
KB_DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    if key := env_secret("SECRET_KEY"):
        return key
    # Embedded default: one random key per data folder, kept across restarts.
    path = KB_DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Behind a reverse proxy (compose/), the client's address is in X-Forwarded-For and the
# scheme it was reached by in X-Forwarded-Proto.
KB_TRUST_X_FORWARDED_FOR = env_bool("KB_TRUST_X_FORWARDED_FOR", False)
if KB_TRUST_X_FORWARDED_FOR:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",  # its API docs page from its own static files, not from a CDN
    "kb",
    "ingest",
    "retrieval",
    "server",
]

MIDDLEWARE = [
    "server.monitoring.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "kb.request_context.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "kb.middleware.ReadOnlyAccessMiddleware",
    "kb.middleware.ApiInputMiddleware",
]

ROOT_URLCONF = "server.urls"
ASGI_APPLICATION = "server.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# A URL with a password: also read from DATABASE_URL_FILE (compose/ uses a secret).
_database_url = env_secret("DATABASE_URL")
DATABASES = {
    "default": dj_database_url.parse(
        _database_url or f"sqlite:///{KB_DATA_DIR / 'kb.sqlite3'}",
        # Seconds a thread keeps its connection between requests (the web process keeps
        # its request threads: server.request_threads). SQLite's file is local and keeps
        # them by default; a server's connections are the operator's to size.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0 if _database_url else 600, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web threads and the background worker share the file: serialise writers up
    # front (IMMEDIATE) instead of failing on lock upgrades, and let readers run (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
# The login form: after this many failures for one user name (or more from one address)
# within the window, it stops checking passwords until the window ends.
KB_LOGIN_MAX_FAILURES = env_int("KB_LOGIN_MAX_FAILURES", 5, minimum=1)
KB_LOGIN_MAX_FAILURES_PER_IP = env_int("KB_LOGIN_MAX_FAILURES_PER_IP", 30, minimum=1)
KB_LOGIN_WINDOW_SECONDS = env_int("KB_LOGIN_WINDOW_SECONDS", 900, minimum=1)

# Single sign-on (kb.sso): OpenID Connect's authorization code flow with PKCE, through
# mozilla-django-oidc. Off while OIDC_ISSUER is unset. The provider's endpoints come from
# its discovery document under OIDC_ISSUER, fetched on first use.
OIDC_ISSUER = env_str("OIDC_ISSUER").strip()
OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID").strip()
OIDC_RP_CLIENT_SECRET = env_secret("OIDC_CLIENT_SECRET") or ""
OIDC_RP_SCOPES = " ".join(env_str("OIDC_SCOPES", "openid email profile").split())
OIDC_RP_SIGN_ALGO = env_choice(
    "OIDC_SIGN_ALGO", "rs256", ("rs256", "rs384", "rs512", "es256", "es384", "es512")
).upper()
OIDC_TOKEN_USE_BASIC_AUTH = (
    env_choice(
        "OIDC_TOKEN_AUTH_METHOD",
        "client_secret_basic",
        ("client_secret_basic", "client_secret_post"),
    )
    == "client_secret_basic"
)
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_EMAIL_CLAIM = env_str("OIDC_EMAIL_CLAIM", "email")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
# The kb groups that single sign-on manages: each directory group G is the kb group
# PREFIX + G, and a login adds and removes only groups with the prefix.
OIDC_GROUP_PREFIX = env_str("OIDC_GROUP_PREFIX", "sso:")
# E-mail domains that may log in (exact, lower case); empty: any.
OIDC_ALLOWED_DOMAINS = [domain.lower().lstrip("@") for domain in env_list("OIDC_ALLOWED_DOMAINS")]
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT", 10.0)
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint of the provider's logout
OIDC_OP_LOGOUT_URL_METHOD = "kb.sso.provider_logout_url"
# Password login for everyone, or (false) only for the break-glass administrator.
KB_PASSWORD_LOGIN = env_bool("KB_PASSWORD_LOGIN", True)
KB_BREAK_GLASS_USER = env_str("KB_BREAK_GLASS_USER").strip()
AUTHENTICATION_BACKENDS = ["kb.sso.PasswordBackend", "kb.sso.OidcBackend"]
if OIDC_ISSUER:
    if not (OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET):
        raise ImproperlyConfigured(
            "OIDC_ISSUER is set: OIDC_CLIENT_ID and OIDC_CLIENT_SECRET (or _FILE) are needed too"
        )
    if "openid" not in OIDC_RP_SCOPES.split():
        raise ImproperlyConfigured(f"OIDC_SCOPES must include openid, not {OIDC_RP_SCOPES!r}")
    _issuer = urlsplit(OIDC_ISSUER)
    if not (
        _issuer.scheme == "https"
        or (_issuer.scheme == "http" and _issuer.hostname in ("127.0.0.1", "localhost", "::1"))
    ):
        raise ImproperlyConfigured(
            f"OIDC_ISSUER must be an https:// address (http only on loopback), not {OIDC_ISSUER!r}"
        )
elif not KB_PASSWORD_LOGIN:
    raise ImproperlyConfigured("KB_PASSWORD_LOGIN=false needs OIDC_ISSUER: else nobody logs in")

# The audit trail's row hashes are keyed, and its newest head is kept outside the
# database (kb.audit_anchor). Keep both where a database writer cannot reach: by default
# a key file and a head file in the data folder.
KB_AUDIT_KEY = env_secret("KB_AUDIT_KEY") or ""
KB_AUDIT_HEAD_FILE = env_str("KB_AUDIT_HEAD_FILE")
# A private question still writes its audit row; false keeps its question and answer
# texts out of it (metadata only: who, when, collections, outcome, passages).
KB_PRIVATE_AUDIT_TEXTS = env_bool("KB_PRIVATE_AUDIT_TEXTS", True)
# Days question and answer texts are kept, in the audit trail and in conversations, for
# collections that set none of their own (kb.retention); 0: kept for good.
KB_TEXT_RETENTION_DAYS = env_int("KB_TEXT_RETENTION_DAYS", 0, minimum=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = KB_DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Sessions keep their user's id in a column (kb.sessions): deactivating ends them at once.
SESSION_ENGINE = "kb.sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# SECURE_COOKIES: kb is reached over HTTPS. It turns on secure cookies, the redirect to
# HTTPS and HSTS (a year, subdomains, preload: `check --deploy` is clean); each can be
# set on its own. The probes and the scrape stay on plain HTTP inside the network.
_HTTPS = env_bool("SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if _HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", _HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", _HTTPS)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Watching kb (server.monitoring): /metrics, and /readyz's details, for these networks or
# with this bearer token. PROMETHEUS_MULTIPROC_DIR (set before start, emptied at each
# start) adds up the values of every web and worker process.
KB_METRICS_ALLOWED_NETWORKS = env_networks("KB_METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
KB_METRICS_TOKEN = env_secret("KB_METRICS_TOKEN") or ""
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")

# SCIM provisioning (/scim/v2, kb.scim): the identity provider's bearer token, at least
# 32 characters (or KB_SCIM_TOKEN_FILE). Unset, the SCIM endpoints answer 404.
KB_SCIM_TOKEN = env_secret("KB_SCIM_TOKEN") or ""
if KB_SCIM_TOKEN and len(KB_SCIM_TOKEN) < 32:
    raise ImproperlyConfigured(
        f"KB_SCIM_TOKEN must be at least 32 characters, not {len(KB_SCIM_TOKEN)}: "
        "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    )

# Services. Empty means the embedded default.
REDIS_URL = env_secret("REDIS_URL") or ""  # or REDIS_URL_FILE: it holds the password
QDRANT_URL = env_str("QDRANT_URL")
QDRANT_API_KEY = env_secret("QDRANT_API_KEY") or ""
# Shared by every web process in production (login rate limits), in memory otherwise.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
# Answers: OpenAI-compatible endpoints (vLLM in production), comma-separated; requests
# are spread across the healthy ones. Unset: `serve` starts the bundled small local model.
KB_LOCAL_LLM = not env_str("LLM_BASE_URL")
KB_LOCAL_LLM_PORT = env_int("KB_LOCAL_LLM_PORT", 8012, minimum=1)
# Servers of the bundled model, on consecutive ports from KB_LOCAL_LLM_PORT, the cores
# shared between them: 2 answer two people at once sooner in total, one person alone
# later (bench/README.md, "Answers"). Each answers one question at a time.
KB_LOCAL_LLM_SERVERS = env_int("KB_LOCAL_LLM_SERVERS", 1, minimum=1)
# The bundled model: a known name or a GGUF file's path (retrieval.local_models); `serve`
# checks it before starting.
KB_LOCAL_MODEL = env_str("KB_LOCAL_MODEL", local_models.DEFAULT).strip() or local_models.DEFAULT
LLM_BASE_URLS = env_list("LLM_BASE_URL") or [
    f"http://127.0.0.1:{KB_LOCAL_LLM_PORT + n}/v1" for n in range(KB_LOCAL_LLM_SERVERS)
]
LLM_MODEL = env_str("LLM_MODEL", local_models.model_name(KB_LOCAL_MODEL) if KB_LOCAL_LLM else "")
LLM_API_KEY = env_secret("LLM_API_KEY") or "none"
LLM_IS_LOCAL = env_bool("LLM_IS_LOCAL", True)  # the default endpoints run on our machines
KB_LLM_TIMEOUT = env_float("KB_LLM_TIMEOUT", 120.0)
KB_LLM_CONNECT_TIMEOUT = env_float("KB_LLM_CONNECT_TIMEOUT", 3.0)
KB_LLM_MAX_TOKENS = env_int("KB_LLM_MAX_TOKENS", 400, minimum=16)
KB_LLM_RETRY_DOWN_SECONDS = env_float("KB_LLM_RETRY_DOWN_SECONDS", 30.0)
# Many people asking at once (retrieval.answer_queue): questions each endpoint answers at
# once (llama.cpp's server one; vLLM batches, up to its --max-num-seqs), and the longest
# a question may expect to wait for one before it gets 429 with its passages (0: no bound).
KB_LLM_SLOTS = env_int("KB_LLM_SLOTS", 1 if KB_LOCAL_LLM else 32, minimum=1)
KB_ANSWER_MAX_WAIT_SECONDS = env_float("KB_ANSWER_MAX_WAIT_SECONDS", 60.0, minimum=0)
# Usage and budgets (retrieval.usage): the default model's prices per million tokens (a
# model profile carries its own), and token budgets (0: unlimited; a collection may
# carry its own monthly one). Days and months are UTC.
LLM_PRICE_PROMPT_PER_MILLION = env_float("LLM_PRICE_PROMPT_PER_MILLION", 0.0, minimum=0)
LLM_PRICE_COMPLETION_PER_MILLION = env_float("LLM_PRICE_COMPLETION_PER_MILLION", 0.0, minimum=0)
KB_BUDGET_USER_TOKENS_PER_DAY = env_int("KB_BUDGET_USER_TOKENS_PER_DAY", 0, minimum=0)
KB_BUDGET_COLLECTION_TOKENS_PER_MONTH = env_int(
    "KB_BUDGET_COLLECTION_TOKENS_PER_MONTH", 0, minimum=0
)
# Retrieval.
KB_MAX_QUESTION_CHARS = env_int("KB_MAX_QUESTION_CHARS", 2000, minimum=10)
KB_SOURCES_MAX_CHARS = env_int("KB_SOURCES_MAX_CHARS", 6000, minimum=500)
KB_ANSWER_SOURCES = env_int("KB_ANSWER_SOURCES", 5, minimum=1)
KB_SEARCH_PER_DOCUMENT = env_int("KB_SEARCH_PER_DOCUMENT", 3, minimum=1)
# The dense list's share in hybrid search (retrieval.fusion); BM25 has the rest. 0.5 was
# the best on SciFact's train split.
KB_HYBRID_DENSE_WEIGHT = env_float("KB_HYBRID_DENSE_WEIGHT", 0.5, minimum=0)
if KB_HYBRID_DENSE_WEIGHT > 1:
    raise ImproperlyConfigured(
        f"KB_HYBRID_DENSE_WEIGHT must be at most 1, not {KB_HYBRID_DENSE_WEIGHT}"
    )
KB_RERANKER_PATH = env_str("KB_RERANKER_PATH")  # a local cross-encoder folder; off when unset
KB_RERANK_CANDIDATES = env_int("KB_RERANK_CANDIDATES", 30, minimum=1)
# A follow-up question is made standalone before the search: the model has this long to
# rewrite it (0: never ask), else the earlier questions' terms are carried over.
KB_REWRITE_SECONDS = env_float("KB_REWRITE_SECONDS", 5.0)
# Below this cosine similarity between question and best passage, kb does not ask the
# model and says the documents do not answer (calibrated in bench/README.md).
KB_REFUSAL_THRESHOLD = env_float("KB_REFUSAL_THRESHOLD", 0.38)
KB_REFUSAL_MESSAGE = env_str("KB_REFUSAL_MESSAGE", "I could not find this in your documents.")

# Celery: JSON payloads of ids, acknowledged after the work, bounded in time.
# Redis in production; without REDIS_URL a folder on disk is the broker (one machine).
CELERY_BROKER_URL = REDIS_URL or "folder://"  # server.broker: kombu's filesystem transport
if CELERY_BROKER_URL.startswith("folder://"):
    _broker_dir = KB_DATA_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    # The same folder for in and out: that is where producers and consumers meet.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "polling_interval": 0.05,
    }
else:
    # socket_timeout: a consumer blocked reading a reply that never comes (a broker
    # failover, a half-open connection; seen once as a worker stop that never ended)
    # gets an error it recovers from, instead of waiting forever.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200, "socket_timeout": 30}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A prefork process past this (after a task) is replaced; its parse child has its own cap.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("KB_WORKER_MAX_MEMORY_MB", 4096, minimum=256) * 1024
CELERY_TASK_SOFT_TIME_LIMIT = env_int("KB_TASK_SOFT_TIME_LIMIT", 1800, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("KB_TASK_TIME_LIMIT", 1900, minimum=1)
CELERY_TASK_DEFAULT_QUEUE = "ingest"
# An evaluation run waits on the model for minutes to hours: on a queue of its own, it
# never holds up parsing (and the reconcilers, on ingest, never wait behind it).
CELERY_TASK_ROUTES = {
    "ingest.tasks.version_embed_task": {"queue": "embed"},
    "ingest.tasks.versions_embed_task": {"queue": "embed"},
    "retrieval.tasks.evaluation_run_task": {"queue": "evaluate"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The embedded default runs the worker inside the serving process (server/runtime.py).
# REST calls per token and per user ("600/min"; empty: none), kept in CACHES (kb.rate_limits).
KB_RATE_LIMIT_TOKEN = env_str("KB_RATE_LIMIT_TOKEN", "1200/min")
KB_RATE_LIMIT_USER = env_str("KB_RATE_LIMIT_USER", "2400/min")
KB_INPROCESS_WORKER = env_bool("KB_INPROCESS_WORKER", not QDRANT_URL)
# Threads per queue (ingest, embed, evaluate) of the in-process worker.
KB_WORKER_CONCURRENCY = env_int("KB_WORKER_CONCURRENCY", 1, minimum=1)
CELERY_TIMEZONE = "UTC"

# Ingestion.
KB_MAX_UPLOAD_MB = env_int("KB_MAX_UPLOAD_MB", 200, minimum=1)
KB_MAX_PASSAGES = env_int("KB_MAX_PASSAGES", 50_000, minimum=1)
KB_MAX_ELEMENTS = env_int("KB_MAX_ELEMENTS", 200_000, minimum=1)  # parsed parts, per document
# Each file is parsed and chunked in a child process, stopped past these (ingest.isolated).
KB_PARSE_MEMORY_MB = env_int("KB_PARSE_MEMORY_MB", 2048, minimum=64)
KB_PARSE_SECONDS = env_int("KB_PARSE_SECONDS", 600, minimum=1)
KB_EMBEDDING_MODEL_PATH = env_str("KB_EMBEDDING_MODEL_PATH")  # default: the bundled MiniLM
KB_EMBEDDING_DEVICE = env_str("KB_EMBEDDING_DEVICE")  # default: cuda when present, else cpu
# auto: ONNX Runtime on a CPU (same vectors, faster), sentence-transformers on a GPU.
KB_EMBEDDING_BACKEND = env_choice("KB_EMBEDDING_BACKEND", "auto", ("auto", "onnx", "torch"))
# ONNX Runtime threads for one batch (0: one per core). While this process parses, one
# fewer: parsing holds the GIL on one core (ingest.embedder).
KB_EMBEDDING_THREADS = env_int("KB_EMBEDDING_THREADS", 0, minimum=0)
# Where the ONNX export of the embedding model is kept (made once, on first use).
KB_MODEL_CACHE_DIR = Path(env_str("KB_MODEL_CACHE_DIR", str(KB_DATA_DIR / "models")))
KB_EMBEDDING_BATCH_SIZE = env_int("KB_EMBEDDING_BATCH_SIZE", 16, minimum=1)
# A document whose stage has not moved for this long is taken to be lost and re-queued.
KB_STALE_AFTER_SECONDS = env_int("KB_STALE_AFTER_SECONDS", 900, minimum=1)
# Parses a version may start before it fails: one that kills its worker is not retried
# forever, with every other document waiting behind it.
KB_PARSE_ATTEMPTS = env_int("KB_PARSE_ATTEMPTS", 3, minimum=1)
# An evaluation run that has answered no question for this long lost its worker and is
# marked failed (one question takes the model's time to first token, at most
# KB_LLM_TIMEOUT an endpoint, and then KB_LLM_MAX_TOKENS tokens: seconds to minutes).
KB_EVALUATION_STALE_SECONDS = env_int("KB_EVALUATION_STALE_SECONDS", 1800, minimum=60)
KB_POLL_SECONDS = 0.25
# How often texts past their retention are looked for (beat here; the embedded server
# runs it in a thread of its own).
KB_RETENTION_RUN_SECONDS = 3600
# The reconcilers and the retention run (production's; the embedded default runs them in
# server.runtime).
CELERY_BEAT_SCHEDULE = {
    "ingest-reconcile": {
        "task": "ingest.tasks.ingest_reconcile_task",
        "schedule": max(KB_STALE_AFTER_SECONDS // 3, 10),
    },
    "retention-expire": {
        "task": "retrieval.tasks.retention_expire_task",
        "schedule": KB_RETENTION_RUN_SECONDS,
    },
    "evaluations-reconcile": {
        "task": "retrieval.tasks.evaluations_reconcile_task",
        "schedule": KB_EVALUATION_STALE_SECONDS // 3,
    },
}
DATA_UPLOAD_MAX_NUMBER_FILES = 1000
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Audit: how often an API token's "last used" time is written at most.
KB_TOKEN_TOUCH_SECONDS = env_int("KB_TOKEN_TOUCH_SECONDS", 60, minimum=0)

# One line per record, with the request id that the audit row of the same request holds
# ("-" outside a request); KB_LOG_FORMAT=json for a log collector.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "kb.request_context.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(request_id)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn's copy of each message with terminal colour codes
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": env_choice("KB_LOG_FORMAT", "text", ("text", "json")),
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Celery's line per task received and per task succeeded: two lines for each file
    # of a folder, and 5% of a run of small files (bench/ingest_many.py). Failures and
    # retries are warnings and errors, and still logged.
    "loggers": {
        name: {"level": "WARNING"} for name in ("celery.app.trace", "celery.worker.strategy")
    },
}
