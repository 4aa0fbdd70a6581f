"""Long text in pieces of bounded size, cut where the text breaks: after a blank line,
else a line, else a word, in the second half of each piece; at the size when it has none.

The chunker windows an element this way and the parser a large text file, so that no
step sees more than one window at a time (issue 15: one 50 MB line took 6 GB).
"""

from collections.abc import Iterator
from typing import TextIO

BREAKS = ("\n\n", "\n", " ")


def _cut(text: str, start: int, size: int) -> int:
    for mark in BREAKS:
        at = text.rfind(mark, start + size // 2, start + size)
        if at >= 0:
            return at + len(mark)
    return start + size


def windows(text: str, size: int) -> Iterator[str]:
    start = 0
    while len(text) - start > size:
        end = _cut(text, start, size)
        yield text[start:end]
        start = end
    yield text[start:]


def file_windows(handle: TextIO, size: int) -> Iterator[str]:
    """The same for an open file, read one window at a time."""
    rest = ""
    while block := handle.read(size - len(rest)):
        text = rest + block
        if len(text) < size:
            rest = text
            break
        end = _cut(text, 0, size)
        yield text[:end]
        rest = text[end:]
    if rest:
        yield rest
