"""Elements in, passages out: each passage fits the embedding model's window whole.

Text is grouped by section and page, then split on sentence boundaries by llama-index's
SentenceSplitter, measured in the embedding model's own word pieces so that nothing is
cut off when embedded. Each passage carries its document title and section heading as
context (embedded with it). A table stays one passage with its header row; a table too
long for one is split by rows, each part repeating the header.

The work is bounded for any input: an element is cut into windows of WINDOW_CHARS, a run
of text ends at RUN_MAX_TOKENS, and passages are made lazily, so a caller that stops at a
limit stops the work too. A 50 MB line or a 150 MB text costs what its first passages do.
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ingest import embedder
from ingest.parsing import Element
from ingest.windows import windows

OVERLAP_TOKENS = 24
MAX_CONTEXT_TOKENS = 48
MIN_RUN_TOKENS = 100
# Bounds on what one split sees. A window ends at a line or word break where it can.
WINDOW_CHARS = 20_000
RUN_MAX_TOKENS = 4_096
# A "word" this long is a blob (base64, a minified line, a hostile file): it has no
# meaning to search and would become one unknown word piece. It is dropped.
_BLOB = re.compile(r"\S{100,}")
# Running heads and page numbers repeat on every page and say nothing.
SKIPPED_TYPES = frozenset({"Header", "Footer", "PageNumber", "PageBreak"})


@dataclass(frozen=True)
class Passage:
    text: str
    context: str
    page: int | None
    section: str
    element_type: str
    token_count: int


def _budget() -> int:
    # [CLS] and [SEP] take two of the model's positions.
    return embedder.max_tokens() - 2


def _context(title: str, section: str) -> tuple[str, int]:
    """The context line and its word pieces."""
    parts = [title] + ([section] if section and section != title else [])
    context = " > ".join(p.strip() for p in parts if p.strip())
    ids = embedder.tokenizer().encode(context, add_special_tokens=False)
    if len(ids.ids) <= MAX_CONTEXT_TOKENS:
        return context, len(ids.ids)
    context = context[: ids.offsets[MAX_CONTEXT_TOKENS - 1][1]] + "…"
    return context, embedder.count_tokens(context)


def _header_fits(table: str) -> bool:
    return len(table) <= WINDOW_CHARS or table.find("\n", 0, WINDOW_CHARS) >= 0


def _groups(
    elements: Iterable[Element],
) -> Iterator[tuple[str, int | None, str, list[str], int | None]]:
    """(section, page, type, texts, word pieces): runs of body text, counted, and each
    table alone.

    A run ends at a page break, at RUN_MAX_TOKENS, or at a new heading once it holds
    MIN_RUN_TOKENS: PDFs mark many short lines as headings, and a passage per line would
    carry no meaning. A table whose header row alone fills a window is read as text.
    """
    run: list[str] = []
    run_tokens = 0
    key: tuple[str, int | None] = ("", None)
    for element in elements:
        if element.type in SKIPPED_TYPES:
            continue
        if element.type == "Table" and _header_fits(element.text):
            if run:
                yield (*key, "Text", run, run_tokens)
                run, run_tokens = [], 0
            yield (element.section, element.page, "Table", [element.text], None)
            continue
        for text in windows(element.text, WINDOW_CHARS):
            page_break = element.page != key[1]
            heading = element.section != key[0] and run_tokens >= MIN_RUN_TOKENS
            if run and (page_break or heading or run_tokens >= RUN_MAX_TOKENS):
                yield (*key, "Text", run, run_tokens)
                run, run_tokens = [], 0
            if not run:
                key = (element.section, element.page)
            run.append(text)
            run_tokens += embedder.count_tokens(text)
    if run:
        yield (*key, "Text", run, run_tokens)


def _split_text(text: str, size: int) -> list[str]:
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(
        chunk_size=size,
        chunk_overlap=min(OVERLAP_TOKENS, size // 4),
        tokenizer=lambda t: embedder.tokenizer().encode(t, add_special_tokens=False).ids,
    )
    return [piece for piece in splitter.split_text(text) if piece.strip()]


def _split_table(text: str, size: int) -> list[str]:
    """Rows together while they fit, each part led by the header row."""
    header, *lines = text.split("\n")
    rows = [piece for line in lines for piece in windows(line, WINDOW_CHARS)]
    parts: list[str] = []
    current: list[str] = []
    for row in rows:
        candidate = "\n".join([header, *current, row])
        if current and embedder.count_tokens(candidate) > size:
            parts.append("\n".join([header, *current]))
            current = []
        current.append(row)
    parts.append("\n".join([header, *current]))
    return parts


def _hard_split(text: str, size: int) -> list[str]:
    """Last resort for text with no sentence or word breaks: cut by word pieces."""
    encoding = embedder.tokenizer().encode(text, add_special_tokens=False)
    pieces = []
    for start in range(0, len(encoding.ids), size):
        offsets = encoding.offsets[start : start + size]
        pieces.append(text[offsets[0][0] : offsets[-1][1]])
    return pieces


def _pieces(text: str, size: int, kind: str, counted: int | None) -> Iterator[tuple[str, int]]:
    """(piece, its word pieces), each within `size`. A run of text whose parts' counts
    (`counted`) say it may fit is counted whole, and most fit: no splitter for them."""
    if counted is not None and counted <= size:
        tokens = embedder.count_tokens(text)
        if tokens <= size:
            yield text, tokens
            return
    split = _split_table(text, size) if kind == "Table" else _split_text(text, size)
    for piece in split:
        tokens = embedder.count_tokens(piece)
        if tokens <= size:
            yield piece, tokens
        else:
            for part in _hard_split(piece, size):
                yield part, embedder.count_tokens(part)


def passages(elements: Iterable[Element], *, title: str) -> Iterator[Passage]:
    budget = _budget()
    for section, page, kind, texts, counted in _groups(elements):
        context, context_tokens = _context(title, section)
        size = budget - context_tokens - 1  # the newline between them
        text = _BLOB.sub(" ", "\n\n".join(texts)).strip()
        if not text:
            continue
        for part, tokens in _pieces(text, size, kind, counted):
            yield Passage(
                text=part,
                context=context,
                page=page,
                section=section,
                element_type=kind,
                token_count=tokens,
            )
