"""Citations checked against the sources that were actually sent to the model."""

import re
from dataclasses import dataclass

from retrieval.search import Passage

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")
QUOTE_CHARS = 300


@dataclass(frozen=True)
class Citation:
    n: int
    passage: Passage
    quote: str


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


def citations_check(answer: str, sources: list[Passage]) -> Checked:
    cited: dict[int, Citation] = {}
    unsupported = 0
    kept_sentences = []
    for sentence in _SENTENCE.split(answer.strip()):
        if not sentence.strip():
            continue
        cleaned, valid = _keep_valid_markers(sentence, len(sources))
        for n in valid:
            if n not in cited:
                cited[n] = Citation(n, sources[n - 1], _quote(sources[n - 1], cleaned))
        if not valid and _WORD.search(cleaned):
            unsupported += 1
        kept_sentences.append(cleaned)
    return Checked(" ".join(kept_sentences), list(cited.values()), unsupported)
