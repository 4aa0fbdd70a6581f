"""One OpenAI-compatible chat endpoint (vLLM, llama.cpp's server): the LLM port.

The pool (retrieval.llm) knows only `ChatClient`: which endpoint to ask, and what to do
when one is down. This module is the only one that speaks the `openai` client's API.
"""

from collections.abc import Iterator
from typing import Protocol

import openai
from django.conf import settings


class EndpointDown(RuntimeError):
    """The endpoint refused or failed before the answer's first token."""


class AnswerCut(RuntimeError):
    """The endpoint stopped in the middle of an answer."""


class ChatClient(Protocol):
    url: str

    def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int, stop: list[str] | None
    ) -> Iterator[str]:
        """The answer's tokens. Raises EndpointDown before the first one, AnswerCut after."""


class OpenAIChat:
    def __init__(self, url: str, *, model: str, api_key: str) -> None:
        self.url = url
        self.model = model
        self.api_key = api_key

    def _client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url,
            api_key=self.api_key,
            max_retries=0,
            timeout=openai.Timeout(
                settings.KB_LLM_TIMEOUT, connect=settings.KB_LLM_CONNECT_TIMEOUT
            ),
        )

    def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int, stop: list[str] | None
    ) -> Iterator[str]:
        try:
            response = self._client().chat.completions.create(
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
            raise EndpointDown(str(error)) from error
        return _tokens(first, chunks)


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
        raise AnswerCut(str(error)) from error
