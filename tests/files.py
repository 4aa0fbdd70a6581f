"""Small real documents of every format, made on the spot (no network, no shared data)."""

import io
import zipfile
from email.message import EmailMessage
from pathlib import Path

FACTS = {
    "txt": "The Zephyr project deadline is the fourteenth of March.",
    "md": "Vacation requests need approval from the Tallinn office manager.",
    "html": "Badges are replaced at the reception desk on floor seven.",
    "csv": "Orchard",
    "eml": "The quarterly audit committee meets in the Lisbon boardroom.",
    "docx": "Expense reports above nine hundred euros need a second signature.",
    "pptx": "The onboarding bootcamp lasts eleven days for new engineers.",
    "xlsx": "Gooseberry",
    "pdf": "Parking permits for the Oslo campus are issued by facilities.",
}


def make(kind: str, folder: Path, name: str | None = None, text: str | None = None) -> Path:
    fact = text or FACTS[kind]
    path = folder / (name or f"sample.{kind}")
    if kind == "txt":
        path.write_text(f"Team notes\n\n{fact}\n\nOther items were postponed.\n")
    elif kind == "md":
        path.write_text(
            f"---\ntitle: Handbook\n---\n# Time off\n\n{fact}\n\n## Sick leave\n\nCall in.\n"
        )
    elif kind == "html":
        path.write_text(
            f"<html><head><title>Security</title><script>var x=1;</script></head>"
            f"<body><h1>Security</h1><p>{fact}</p></body></html>"
        )
    elif kind == "csv":
        path.write_text(f"fruit,colour,price\n{fact},green,3\nApple,red,1\n")
    elif kind == "eml":
        message = EmailMessage()
        message["Subject"] = "Committee"
        message["From"] = "a@example.com"
        message["To"] = "b@example.com"
        message.set_content(f"Hello,\n\n{fact}\n\nRegards")
        path.write_bytes(message.as_bytes())
    elif kind == "docx":
        import docx

        document = docx.Document()
        document.add_heading("Finance rules", level=1)
        document.add_paragraph(fact)
        table = document.add_table(rows=2, cols=2)
        table.cell(0, 0).text, table.cell(0, 1).text = "limit", "approver"
        table.cell(1, 0).text, table.cell(1, 1).text = "900", "director"
        document.save(str(path))
    elif kind == "pptx":
        from pptx import Presentation

        deck = Presentation()
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = "Onboarding"
        slide.placeholders[1].text = fact
        deck.save(str(path))
    elif kind == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(["fruit", "stock"])
        sheet.append([fact, 12])
        book.save(str(path))
    elif kind == "pdf":
        write_pdf(path, [f"Facilities\n\n{fact}", "Page two talks about bicycles."])
    else:
        raise ValueError(kind)
    return path


def write_pdf(path: Path, pages: list[str], password: str | None = None) -> Path:
    """A PDF with a real text layer, one page per string (matplotlib's PDF backend)."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    with PdfPages(path) as pdf:
        for text in pages:
            figure = Figure(figsize=(8.5, 11))
            figure.text(0.1, 0.9, text, va="top", wrap=True, fontsize=12)
            pdf.savefig(figure)
    if password:
        from pypdf import PdfReader, PdfWriter

        writer = PdfWriter(clone_from=PdfReader(path))
        writer.encrypt(password)
        with path.open("wb") as out:
            writer.write(out)
    return path


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_plain_pdf(path: Path, text: str, *, pages_extra: bytes = b"") -> Path:
    """A one-page PDF written by hand; `pages_extra` goes into its page tree's root."""
    stream = f"BT /F1 18 Tf 72 700 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 " + pages_extra + b" >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path
