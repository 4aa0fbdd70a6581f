"""One OpenAI-compatible chat endpoint (vLLM, llama.cpp's server): the LLM port.

The pool (retrieval.llm) knows only `ChatClient`: which endpoint to ask, and what to do
when one is down. This module is the only one that speaks the `openai` client's API.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import openai
from django.conf import settings


class EndpointDown(RuntimeError):
    """The endpoint refused or failed before the answer's first token."""


class AnswerCut(RuntimeError):
    """The endpoint stopped in the middle of an answer."""


@dataclass
class Usage:
    """Tokens of one answer, as the model server counted them (filled as it streams).
    A server that does not report them in a stream (llama-cpp-python's) leaves the
    prompt's at 0; the answer's are then its streamed pieces, one token each."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False


class ChatClient(Protocol):
    url: str

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        stop: list[str] | None,
        usage: Usage | None = None,
    ) -> Iterator[str]:
        """The answer's tokens. Raises EndpointDown before the first one, AnswerCut after."""

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, timeout: float) -> str:
        """A short whole answer within `timeout` seconds. Raises EndpointDown."""


def _timeout(seconds: float) -> openai.Timeout:
    return openai.Timeout(seconds, connect=min(seconds, settings.KB_LLM_CONNECT_TIMEOUT))


class OpenAIChat:
    def __init__(self, url: str, *, model: str, api_key: str) -> None:
        self.url = url
        self.model = model
        # One client for every call, each with its own timeout: making a client cost
        # 50 ms of CPU (an HTTP client and its TLS context) in front of every answer's
        # first token, and a kept connection spares a TCP handshake. It is thread-safe.
        self._client = openai.OpenAI(base_url=url, api_key=api_key, max_retries=0)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, timeout: float) -> str:
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]  # plain role/content dicts
                max_tokens=max_tokens,
                temperature=0,
                timeout=_timeout(timeout),
            )
        except openai.APIError as error:
            raise EndpointDown(str(error)) from error
        return str(response.choices[0].message.content or "") if response.choices else ""

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        stop: list[str] | None,
        usage: Usage | None = None,
    ) -> Iterator[str]:
        counted = usage if usage is not None else Usage()
        try:
            response = self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=messages,
                max_tokens=max_tokens,
                stop=stop,
                temperature=0,  # the same question gets the same answer
                stream=True,
                stream_options={"include_usage": True},
                timeout=_timeout(settings.KB_LLM_TIMEOUT),
            )
            chunks = iter(response)
            first = _next_text(chunks, counted)
        except (openai.APIConnectionError, openai.InternalServerError) as error:
            raise EndpointDown(str(error)) from error
        return _tokens(first, chunks, counted, response.close)


def _next_text(chunks: Iterator[object], usage: Usage) -> str | None:
    for chunk in chunks:
        if (counted := getattr(chunk, "usage", None)) is not None:
            usage.prompt_tokens = counted.prompt_tokens
            usage.completion_tokens = counted.completion_tokens
            usage.reported = True
        choices = getattr(chunk, "choices", None)
        if choices and choices[0].delta and choices[0].delta.content:
            if not usage.reported:
                usage.completion_tokens += 1
            return str(choices[0].delta.content)
    return None


def _tokens(
    first: str | None, chunks: Iterator[object], usage: Usage, close: Callable[[], None]
) -> Iterator[str]:
    """The tokens; closed early (a reader who left), it hangs up, so that the model server
    stops writing and takes the next question."""
    try:
        if first is None:
            return
        yield first
        while (text := _next_text(chunks, usage)) is not None:
            yield text
    except openai.APIError as error:
        raise AnswerCut(str(error)) from error
    finally:
        close()
