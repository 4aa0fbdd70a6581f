"""What an answer did, measured the same way wherever answers are scored: a collection's
evaluation (retrieval.evaluation) and the PubMedQA benchmark (bench/answers.py).

Agreement with an expected answer is deterministic, never a model judging itself: the
share of the expected answer's content words that the answer contains. Both texts are
lowercased, citation markers ([1]) dropped, split into words (letters and digits), and
common English function words dropped; a final "s" is dropped from words longer than
three letters ("days" meets "day"; nothing cleverer). A question agrees when at least
AGREEMENT_THRESHOLD of those words are there. A long answer is not penalised for saying
more; a refusal agrees with nothing.
"""

import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrieval.citations import Citation
from retrieval.llm import LlmUnavailable

if TYPE_CHECKING:
    from retrieval.services import Answer

AGREEMENT_THRESHOLD = 0.5
_MARKER = re.compile(r"\[[\d,\s]+\]")
_WORD = re.compile(r"[^\W_]+")
_FUNCTION_WORDS = frozenset(
    _WORD.findall(
        "a an the and or but if of to in on at by for with from as into about over under "
        "is are was were be been being do does did has have had having it its this that "
        "these those there here which who whom whose what when where why how not no nor so "
        "than then too very can could may might must shall should will would i you he she "
        "we they them their our your his her my me us also any all each some such only own "
        "same other just per"
    )
)


def content_words(text: str) -> set[str]:
    words = _WORD.findall(_MARKER.sub(" ", text.lower()))
    return {
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
        for w in words
        if w not in _FUNCTION_WORDS
    }


def agreement(answer: str, expected: str) -> float:
    """The share of `expected`'s content words that `answer` holds (0 to 1)."""
    wanted = content_words(expected)
    if not wanted:
        return 0.0
    return len(wanted & content_words(answer)) / len(wanted)


@dataclass
class Observed:
    """One answer, read to its end: what it said, what it drew on, what it took."""

    answer: str
    refused: bool
    unsupported_sentences: int
    # Documents of the passages sent to the model (found, when the answer was refused).
    documents_sent: set[int]
    citations: list[Citation] = field(default_factory=list)
    ttft_ms: float | None = None  # None: no token from the model (a refusal)
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def documents_cited(self) -> list[int]:
        """The document of each citation, one entry per cited passage."""
        return [c.passage.document_id for c in self.citations]

    def as_row(self) -> dict[str, Any]:
        """The measures every scorer keeps per question."""
        first = (self.ttft_ms or 0.0) / 1000
        return {
            "refused": self.refused,
            "unsupported_sentences": self.unsupported_sentences,
            "ttft_ms": self.ttft_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "generating_seconds": self.seconds - first if self.ttft_ms is not None else 0.0,
            "seconds": self.seconds,
        }


def answer_observe(answer: "Answer") -> Observed:
    """Drains the answer's events (its audit row is written). Raises LlmUnavailable when
    no model answered or it stopped."""
    if answer.unavailable:  # audited already
        raise LlmUnavailable(answer.unavailable)
    checked = answer.complete()
    return Observed(
        answer=checked.answer,
        refused=answer.refused,
        unsupported_sentences=checked.unsupported_sentences,
        documents_sent={p.document_id for p in answer.sources or answer.passages},
        citations=checked.citations,
        ttft_ms=answer.first_token_ms,
        seconds=time.perf_counter() - answer.started,
        prompt_tokens=answer.usage.prompt_tokens or answer.prompt_estimate,
        completion_tokens=answer.usage.completion_tokens,
    )


def speed(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Median time to first token and generation speed (tokens over the time from the
    first token to the last), over the rows the model answered."""
    answered = [r for r in rows if r["ttft_ms"] is not None]
    return {
        "ttft_ms": statistics.median(r["ttft_ms"] for r in answered) if answered else 0.0,
        "tok_s": sum(r["completion_tokens"] for r in answered)
        / max(sum(r["generating_seconds"] for r in answered), 1e-9),
    }


def share(rows: list[dict[str, Any]], key: str) -> float:
    """The share of `rows` whose `key` is true (0 for none)."""
    return sum(1 for r in rows if r[key]) / max(len(rows), 1)
