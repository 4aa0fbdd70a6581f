"""A stored file in, passages out: parse, then chunk, within the limits on a document.

The limits are checked as the work goes, so a file over one stops early: parts
(elements) before chunking starts, or as they are read when the file is streamed;
passages as they are made.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from ingest.chunking import Passage, passages
from ingest.parsing import Element, ParseError, parse, parse_text


@dataclass(frozen=True)
class Limits:
    max_elements: int
    max_passages: int


@dataclass(frozen=True)
class Extracted:
    pages: int | None
    passages: list[Passage]


def extract(
    path: Path,
    extension: str,
    *,
    title: str,
    limits: Limits,
    parsed: Callable[[int | None], object] = lambda pages: None,
) -> Extracted:
    """Raises ParseError with the reason. `parsed(pages)` is called between the stages."""
    document = parse(path, extension)
    elements = _within(document.elements, limits.max_elements)
    parsed(document.pages)
    found = list(islice(passages(elements, title=title), limits.max_passages + 1))
    if not found:
        raise ParseError("no readable text found in the file")
    if len(found) > limits.max_passages:
        raise ParseError(
            f"the document is too long: over the limit of {limits.max_passages} passages "
            "(KB_MAX_PASSAGES); split it into smaller files"
        )
    return Extracted(pages=document.pages, passages=found)


def warm_up() -> None:
    """Loads what every file needs (the parser's models, the splitter, the tokenizer),
    so that the first file's time is its own."""
    list(passages(parse_text("Ready."), title=""))


def _within(elements: Iterable[Element], limit: int) -> Iterable[Element]:
    if isinstance(elements, list):
        if len(elements) > limit:  # known before chunking, whose work grows with them
            raise _too_many(limit)
        return elements
    return _counted(elements, limit)


def _counted(elements: Iterable[Element], limit: int) -> Iterator[Element]:
    for count, element in enumerate(elements, 1):
        if count > limit:
            raise _too_many(limit)
        yield element


def _too_many(limit: int) -> ParseError:
    return ParseError(
        f"the document is too long: over the limit of {limit} parts (paragraphs, rows, "
        "items) (KB_MAX_ELEMENTS); split it into smaller files"
    )
