"""Small text helpers shared by several stages."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import lxml.html

from schemas.records import storable

_WS = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")
_BLOCK_TAGS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "tr")


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment, with block elements separated by blank lines."""
    if not fragment or "<" not in fragment:
        return clean_text(fragment or "")
    fragment = storable(fragment)  # lxml refuses NUL and surrogates outright
    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except Exception:  # lxml raises several types on hostile markup
        return clean_text(re.sub(r"<[^>]+>", " ", fragment))
    for bad in root.xpath("//script|//style"):
        bad.drop_tree()
    for el in root.iter(*_BLOCK_TAGS):
        el.tail = "\n\n" + (el.tail or "")
    return clean_text(root.text_content())


def has_unstorable(text: str) -> bool:
    """True when ``text`` holds NUL (C readers of Parquet and CSV exports cut strings there)
    or a lone surrogate (not encodable as UTF-8, so Arrow and Parquet refuse it)."""
    return storable(text) is not text


def clean_text(text: str) -> str:
    """NFC-normalises, collapses spaces and keeps paragraph breaks as one blank line.

    NUL is removed and lone surrogates are replaced first (:func:`storable`).
    """
    text = unicodedata.normalize("NFC", storable(text))
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def content_hash(body: str) -> str:
    """Hash of a body insensitive to case, punctuation and whitespace differences."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", body).casefold())
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).hexdigest()
