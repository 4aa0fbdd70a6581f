"""A pool of OpenAI-compatible chat endpoints serving one model (vLLM, llama.cpp).

Requests go to the endpoint that is up and streams the fewest of this process's answers,
round-robin among equals; one that refuses or times out is skipped for
KB_LLM_RETRY_DOWN_SECONDS and the next is tried. Failover happens until
the first token: a stream cut off after that is reported, not silently restarted.
"""

import hashlib
import itertools
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings

from kb.models import ModelProfile
from retrieval.chat_client import AnswerCut, ChatClient, EndpointDown, OpenAIChat, Usage


class LlmUnavailable(RuntimeError):
    """No endpoint of the model answered."""


class _Claim:
    """An answer's hold on its endpoint, from the choice to the last token. The token
    stream keeps it; an answer read to its end, closed or dropped lets it go."""


@dataclass
class _Endpoint:
    client: ChatClient
    down_until: float = 0.0
    claims: "weakref.WeakSet[_Claim]" = field(default_factory=weakref.WeakSet)

    @property
    def url(self) -> str:
        return self.client.url


@dataclass
class LlmPool:
    name: str
    model: str
    is_local: bool
    endpoints: list[_Endpoint]
    _turn: "itertools.count[int]" = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def line(self) -> str:
        """Its line of waiting questions (retrieval.answer_queue): the same name in every
        process that asks these endpoints for this model."""
        urls = "|".join(sorted(e.url for e in self.endpoints))
        return hashlib.sha256(f"{self.model}|{urls}".encode()).hexdigest()[:16]

    @property
    def slots(self) -> int:
        """Questions its endpoints answer at once."""
        return settings.KB_LLM_SLOTS * len(self.endpoints)

    def _order(self) -> list[_Endpoint]:
        now = time.monotonic()
        with self._lock:
            start = next(self._turn) % len(self.endpoints)
        rotated = self.endpoints[start:] + self.endpoints[:start]
        # A llama.cpp server answers one question at a time: the second of two asked at
        # once must go to the idle one, which round-robin alone may not pick.
        return sorted(rotated, key=lambda e: (e.down_until > now, len(e.claims)))

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        stop: list[str] | None = None,
        usage: Usage | None = None,
    ) -> Iterator[str]:
        """Tokens of the answer; `usage` is filled as they come. Raises LlmUnavailable if
        no endpoint answers."""
        errors = []
        for endpoint in self._order():
            claim = _Claim()
            endpoint.claims.add(claim)  # counted while the prompt is read, before a token
            try:
                tokens = endpoint.client.stream(
                    messages, max_tokens=max_tokens, stop=stop, usage=usage
                )
            except EndpointDown as error:
                endpoint.down_until = time.monotonic() + settings.KB_LLM_RETRY_DOWN_SECONDS
                errors.append(f"{endpoint.url}: {error}")
                continue
            return _reported(tokens, claim)
        raise LlmUnavailable("no model endpoint answered (" + "; ".join(errors) + ")")

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, timeout: float) -> str:
        """A short answer from the first endpoint that is up, within `timeout` seconds.
        Raises LlmUnavailable. An endpoint too busy for the bound is not marked down: the
        question's own answer may still wait for it."""
        for endpoint in self._order():
            if endpoint.down_until <= time.monotonic():
                try:
                    return endpoint.client.complete(
                        messages, max_tokens=max_tokens, timeout=timeout
                    )
                except EndpointDown as error:
                    raise LlmUnavailable(f"{endpoint.url}: {error}") from error
        raise LlmUnavailable("no model endpoint is up")


def _reported(tokens: Iterator[str], claim: _Claim) -> Iterator[str]:
    """`claim` lives as long as this stream does."""
    try:
        yield from tokens
    except AnswerCut as error:
        raise LlmUnavailable(f"the model stopped answering: {error}") from error


def _endpoints(urls: list[str], *, model: str, api_key: str) -> list[_Endpoint]:
    return [_Endpoint(OpenAIChat(url, model=model, api_key=api_key)) for url in urls]


_pools: dict[str, LlmPool] = {}
_pools_lock = threading.Lock()


def pool_for(profile: ModelProfile | None) -> LlmPool:
    """The pool for a profile, or the default one from the settings. Kept per process,
    so that what is known about endpoints that are down carries over between requests."""
    key = f"profile:{profile.pk}:{profile.base_urls}:{profile.model}" if profile else "default"
    with _pools_lock:
        if key not in _pools:
            if profile:
                api_key = (
                    os.environ.get(profile.api_key_env, "none") if profile.api_key_env else "none"
                )
                pool = LlmPool(
                    name=profile.name,
                    model=profile.model,
                    is_local=profile.is_local,
                    endpoints=_endpoints(profile.urls, model=profile.model, api_key=api_key),
                )
            else:
                pool = LlmPool(
                    name="default",
                    model=settings.LLM_MODEL,
                    is_local=settings.LLM_IS_LOCAL,
                    endpoints=_endpoints(
                        settings.LLM_BASE_URLS,
                        model=settings.LLM_MODEL,
                        api_key=settings.LLM_API_KEY,
                    ),
                )
            _pools[key] = pool
        return _pools[key]
