"""Which formats kb reads, and whether a file's bytes match the name it came with."""

import zipfile
from dataclasses import dataclass
from pathlib import Path

# extension -> (content type, how the bytes must start or what the zip must hold)
TYPES: dict[str, str] = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".csv": "text/csv",
    ".html": "text/html",
    ".htm": "text/html",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".text": "text/plain",
    ".eml": "message/rfc822",
    ".msg": "application/vnd.ms-outlook",
}
_OFFICE_PART = {".docx": "word/", ".pptx": "ppt/", ".xlsx": "xl/"}
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
    if extension == ".pdf" and not head.lstrip()[:5] == b"%PDF-":
        raise UnsupportedFile("the file is named .pdf but is not a PDF")
    if extension in _OFFICE_PART:
        _check_office(path, extension)
    elif extension == ".msg":
        if not head.startswith(_OLE_MAGIC):
            raise UnsupportedFile("the file is named .msg but is not an Outlook message")
    elif extension != ".pdf" and b"\x00" in head:
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
        n.startswith(_OFFICE_PART[extension]) for n in names
    ):
        raise UnsupportedFile(f"the file is named {extension} but is not a {label} document")
