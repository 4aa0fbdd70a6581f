"""Text shown safely: answers with their [n] markers as links, search hits highlighted.
Every piece of document or model text is escaped; only kb's own tags are added."""

import re
from typing import Any

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
_MARKER = re.compile(r"\[(\d{1,3})\]")
_WORD = re.compile(r"\w{3,}")
_COMMON = {"the", "and", "for", "are", "was", "what", "when", "who", "how", "does", "with"}


@register.simple_tag
def cited(answer: str, citations: list[dict[str, Any]]) -> SafeString:
    """The answer with each [n] linking to its passage (plain text when not shown)."""
    urls = {int(c["n"]): c["url"] for c in citations}
    pieces = []
    for i, piece in enumerate(_MARKER.split(answer)):
        if i % 2 == 0:
            pieces.append(escape(piece))
        elif (url := urls.get(int(piece))) is not None:
            pieces.append(
                format_html(
                    '<a class="cite" href="{}" aria-label="source {}">[{}]</a>', url, piece, piece
                )
            )
        else:
            pieces.append(escape(f"[{piece}]"))
    return mark_safe("".join(pieces))  # noqa: S308 (each piece escaped above)


@register.filter
def highlight(text: str, query: str) -> SafeString:
    """The text, escaped, with the query's words marked."""
    words = sorted({w.lower() for w in _WORD.findall(query)} - _COMMON, key=len, reverse=True)
    if not words:
        return escape(text)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE)
    pieces = pattern.split(text)
    marked = [
        format_html("<mark>{}</mark>", piece) if i % 2 else escape(piece)
        for i, piece in enumerate(pieces)
    ]
    return mark_safe("".join(marked))  # noqa: S308 (each piece escaped above)
