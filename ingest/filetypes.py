"""Which formats kb reads, and whether a file's bytes match the name it came with."""

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Format:
    """A format kb reads: its content type, the unstructured partitioner that parses it
    (`unstructured.partition.<partition>`), and how its first bytes are checked."""

    content_type: str
    partition: str
    check: Literal["pdf", "office", "ole", "text"] = "text"
    office_part: str = ""  # the folder an Office zip must hold


_WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_SLIDES = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
_SHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMATS: dict[str, Format] = {
    ".pdf": Format("application/pdf", "pdf", "pdf"),
    ".docx": Format(_WORD, "docx", "office", "word/"),
    ".pptx": Format(_SLIDES, "pptx", "office", "ppt/"),
    ".xlsx": Format(_SHEET, "xlsx", "office", "xl/"),
    ".csv": Format("text/csv", "csv"),
    ".html": Format("text/html", "html"),
    ".htm": Format("text/html", "html"),
    ".md": Format("text/markdown", "md"),
    ".markdown": Format("text/markdown", "md"),
    ".txt": Format("text/plain", "text"),
    ".text": Format("text/plain", "text"),
    ".eml": Format("message/rfc822", "email"),
    ".msg": Format("application/vnd.ms-outlook", "msg", "ole"),
}
TYPES: dict[str, str] = {extension: f.content_type for extension, f in FORMATS.items()}
_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
SUPPORTED = ", ".join(sorted(TYPES))


class UnsupportedFile(ValueError):
    """The file cannot be read as what it claims to be; the message says why."""


@dataclass(frozen=True)
class FileType:
    extension: str
    content_type: str


def detect(path: Path, filename: str) -> FileType:
    """The file's type from its name, checked against its first bytes."""
    extension = Path(filename).suffix.lower()
    if extension not in TYPES:
        raise UnsupportedFile(
            f"{extension or 'no extension'}: not a supported format (kb reads {SUPPORTED})"
        )
    with path.open("rb") as handle:
        head = handle.read(8192)
    if not head.strip():
        raise UnsupportedFile("the file is empty")
    check = FORMATS[extension].check
    if check == "pdf" and not head.lstrip()[:5] == b"%PDF-":
        raise UnsupportedFile("the file is named .pdf but is not a PDF")
    if check == "office":
        _check_office(path, extension)
    elif check == "ole" and not head.startswith(_OLE_MAGIC):
        raise UnsupportedFile("the file is named .msg but is not an Outlook message")
    elif check == "text" and b"\x00" in head:
        raise UnsupportedFile(f"the file is named {extension} but holds binary data, not text")
    return FileType(extension, TYPES[extension])


def _check_office(path: Path, extension: str) -> None:
    label = extension.lstrip(".").upper()
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise UnsupportedFile(
            f"the file is named {extension} but is not a {label} document"
        ) from None
    if "[Content_Types].xml" not in names or not any(
        n.startswith(FORMATS[extension].office_part) for n in names
    ):
        raise UnsupportedFile(f"the file is named {extension} but is not a {label} document")
