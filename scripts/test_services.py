"""Point the test suite at this machine's PostgreSQL and Redis, then run the command given.

Tests use PostgreSQL and Redis when they answer and SQLite otherwise. With
KB_REQUIRE_SERVICES=1 (CI) an unreachable service is an error, never a skip.
"""

import os
import sys

import psycopg
import redis

DATABASE_URL = os.environ.get("KB_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kb")
REDIS_URL = os.environ.get("KB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _postgres_ok() -> str:
    admin_url = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    try:
        psycopg.connect(admin_url, connect_timeout=3).close()
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]
    return ""


def _redis_ok() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        return str(error)
    return ""


def main() -> None:
    required = os.environ.get("KB_REQUIRE_SERVICES") == "1"
    env = dict(os.environ)
    # Every test has its own data folder; the embedding model's ONNX export is made once.
    env.setdefault("KB_MODEL_CACHE_DIR", os.path.abspath(".pytest_cache/kb-models"))
    # Tests answer with the small bundled model, whatever model this machine serves.
    env["KB_LOCAL_MODEL"] = "smollm2-135m"
    for name, problem, variable, url in (
        ("PostgreSQL", _postgres_ok(), "DATABASE_URL", DATABASE_URL),
        ("Redis", _redis_ok(), "KB_TEST_REDIS_URL", REDIS_URL),
    ):
        if problem:
            if required:
                sys.exit(f"KB_REQUIRE_SERVICES=1 but {name} is unreachable at {url}: {problem}")
            print(f"note: {name} unreachable ({problem}); its tests will be skipped", flush=True)
        else:
            env[variable] = url
            print(f"tests use {name} at {url}", flush=True)
    os.execvpe(sys.argv[1], sys.argv[1:], env)  # noqa: S606


if __name__ == "__main__":
    main()
