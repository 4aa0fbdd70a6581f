"""A pool of OpenAI-compatible chat endpoints serving one model (vLLM, llama.cpp).

Requests go round-robin over the endpoints that are up; one that refuses or times out
is skipped for KB_LLM_RETRY_DOWN_SECONDS and the next is tried. Failover happens until
the first token: a stream cut off after that is reported, not silently restarted.
"""

import itertools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import openai
from django.conf import settings

from kb.models import ModelProfile


class LlmUnavailable(RuntimeError):
    """No endpoint of the model answered."""


@dataclass
class _Endpoint:
    url: str
    down_until: float = 0.0


@dataclass
class LlmPool:
    name: str
    model: str
    api_key: str
    is_local: bool
    endpoints: list[_Endpoint]
    _turn: "itertools.count[int]" = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _order(self) -> list[_Endpoint]:
        now = time.monotonic()
        with self._lock:
            start = next(self._turn) % len(self.endpoints)
        rotated = self.endpoints[start:] + self.endpoints[:start]
        return [e for e in rotated if e.down_until <= now] + [
            e for e in rotated if e.down_until > now
        ]

    def _client(self, endpoint: _Endpoint) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=endpoint.url,
            api_key=self.api_key,
            max_retries=0,
            timeout=openai.Timeout(
                settings.KB_LLM_TIMEOUT, connect=settings.KB_LLM_CONNECT_TIMEOUT
            ),
        )

    def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int, stop: list[str] | None = None
    ) -> Iterator[str]:
        """Tokens of the answer. Raises LlmUnavailable if no endpoint answers."""
        errors = []
        for endpoint in self._order():
            try:
                response = self._client(endpoint).chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    stop=stop,
                    temperature=0,  # the same question gets the same answer
                    stream=True,
                )
                chunks = iter(response)
                first = _next_text(chunks)
            except (openai.APIConnectionError, openai.InternalServerError) as error:
                endpoint.down_until = time.monotonic() + settings.KB_LLM_RETRY_DOWN_SECONDS
                errors.append(f"{endpoint.url}: {error}")
                continue
            return _tokens(first, chunks)
        raise LlmUnavailable("no model endpoint answered (" + "; ".join(errors) + ")")


def _next_text(chunks: Iterator[object]) -> str | None:
    for chunk in chunks:
        choices = getattr(chunk, "choices", None)
        if choices and choices[0].delta and choices[0].delta.content:
            return str(choices[0].delta.content)
    return None


def _tokens(first: str | None, chunks: Iterator[object]) -> Iterator[str]:
    if first is None:
        return
    yield first
    try:
        while (text := _next_text(chunks)) is not None:
            yield text
    except openai.APIError as error:
        raise LlmUnavailable(f"the model stopped answering: {error}") from error


_pools: dict[str, LlmPool] = {}
_pools_lock = threading.Lock()


def pool_for(profile: ModelProfile | None) -> LlmPool:
    """The pool for a profile, or the default one from the settings. Kept per process,
    so that what is known about endpoints that are down carries over between requests."""
    key = f"profile:{profile.pk}:{profile.base_urls}:{profile.model}" if profile else "default"
    with _pools_lock:
        if key not in _pools:
            _pools[key] = (
                LlmPool(
                    name=profile.name,
                    model=profile.model,
                    api_key=os.environ.get(profile.api_key_env, "none")
                    if profile.api_key_env
                    else "none",
                    is_local=profile.is_local,
                    endpoints=[_Endpoint(url) for url in profile.urls],
                )
                if profile
                else LlmPool(
                    name="default",
                    model=settings.LLM_MODEL,
                    api_key=settings.LLM_API_KEY,
                    is_local=settings.LLM_IS_LOCAL,
                    endpoints=[_Endpoint(url) for url in settings.LLM_BASE_URLS],
                )
            )
        return _pools[key]
