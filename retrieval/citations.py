"""Citations checked against the sources that were actually sent to the model."""

import re
from dataclasses import dataclass
from typing import Any

from retrieval.search import Passage

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")
QUOTE_CHARS = 300
# A sentence that cites nothing but restates a source this closely gets that source's
# marker: small models often leave markers out (or number them wrongly) while quoting.
ATTRIBUTE_OVERLAP = 0.6
ATTRIBUTE_MIN_WORDS = 3
_COMMON = {"the", "and", "for", "are", "was", "were", "with", "that", "this", "from", "has"}


@dataclass(frozen=True)
class Citation:
    n: int
    passage: Passage
    quote: str

    def as_dict(self) -> dict[str, Any]:
        passage = self.passage
        return {
            "n": self.n,
            "chunk_id": passage.chunk_id,
            "document_id": passage.document_id,
            "document_title": passage.document_title,
            "page": passage.page,
            "quote": self.quote,
            "url": passage.url,
        }


@dataclass(frozen=True)
class Checked:
    answer: str  # with markers that point nowhere removed
    citations: list[Citation]
    unsupported_sentences: int


def _quote(passage: Passage, claim: str) -> str:
    """The passage's sentence that shares the most words with the claim citing it."""
    words = {w.lower() for w in _WORD.findall(claim)}
    sentences = [s for s in _SENTENCE.split(passage.text) if s.strip()] or [passage.text]
    best = max(sentences, key=lambda s: len(words & {w.lower() for w in _WORD.findall(s)}))
    return best.strip()[:QUOTE_CHARS]


def _keep_valid_markers(sentence: str, count: int) -> tuple[str, list[int]]:
    """The sentence with markers to sources 1..count only, and those numbers."""
    valid: list[int] = []

    def keep(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        good = [n for n in numbers if 1 <= n <= count]
        valid.extend(good)
        return "".join(f"[{n}]" for n in good)

    return _MARKER.sub(keep, sentence), valid


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) >= 3} - _COMMON


def _attributed(sentence: str, sources: list[Passage]) -> tuple[str, list[int]]:
    """The sentence with a marker for the one source that holds most of its words."""
    words = _content_words(sentence)
    if len(words) < ATTRIBUTE_MIN_WORDS:
        return sentence, []
    shares = [len(words & _content_words(p.text)) / len(words) for p in sources]
    best = max(range(len(sources)), key=lambda i: shares[i], default=None)
    if best is None or shares[best] < ATTRIBUTE_OVERLAP:
        return sentence, []
    n = best + 1
    stripped = sentence.rstrip()
    if stripped[-1:] in ".!?":
        return f"{stripped[:-1].rstrip()} [{n}]{stripped[-1]}", [n]
    return f"{stripped} [{n}]", [n]


def citations_check(answer: str, sources: list[Passage]) -> Checked:
    cited: dict[int, Citation] = {}
    unsupported = 0
    kept_sentences = []
    for sentence in _SENTENCE.split(answer.strip()):
        if not sentence.strip():
            continue
        cleaned, valid = _keep_valid_markers(sentence, len(sources))
        if not valid:
            cleaned, valid = _attributed(cleaned, sources)
        for n in valid:
            if n not in cited:
                cited[n] = Citation(n, sources[n - 1], _quote(sources[n - 1], cleaned))
        if not valid and _WORD.search(cleaned):
            unsupported += 1
        kept_sentences.append(cleaned)
    return Checked(" ".join(kept_sentences), list(cited.values()), unsupported)
