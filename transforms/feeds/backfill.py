"""Backfill: already-fetched articles from JSON Lines, joined into the same pipeline.

Each line is a JSON object with ``url`` and ``text`` (required, strings) and ``title``,
``published`` (ISO 8601), ``source``, ``language`` (optional: a string or null). A line
that cannot become an article is one error record (stage ``read_backfill``) naming the
file and the line's first characters, with one of these reasons; the run goes on:

* ``invalid_utf8``: the line is not UTF-8 (JSON text must be);
* ``invalid_json``: not JSON, or not a JSON object;
* ``too_large``: a line over 16 MiB, or a ``text`` over 1,000,000 characters;
* ``missing_url`` / ``missing_text``: the required field is absent, empty or not a string;
* ``wrong_type``: an optional field that is neither a string nor null;
* ``bad_url``: not an absolute http(s) URL, or one holding NUL or an unpaired surrogate;
* ``bad_date``: ``published`` is not ISO 8601.

Repaired rather than refused: NUL and unpaired surrogates in ``text``, ``title`` and
``source`` (removed / replaced by U+FFFD), a ``title`` over 1,000 characters (cut), a
``language`` that is not an ISO 639 code (ignored, detection decides), and a
``published`` date before 1995 or in the future (treated as missing).

Example::

    newsbeam ingest --articles articles.jsonl --output /tmp/out
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.metrics import Metrics

from schemas import Entry
from transforms.extraction.text import clean_text, has_unstorable, storable
from transforms.feeds.parse import (
    MAX_NAME_CHARS,
    MAX_TITLE_CHARS,
    language_code,
    plausible_date,
)
from transforms.fetching.urls import canonical_url, host_of, stable_id
from transforms.util import NAMESPACE, error_record

MAX_LINE_BYTES = 16 * 1024 * 1024
"""A longer line is refused before it is parsed."""
MAX_TEXT_CHARS = 1_000_000
"""A longer ``text`` is refused: far beyond a news article, it is most likely a whole
site or a file pasted into one field."""
MAX_URL_CHARS = 4096
OPTIONAL_FIELDS = ("title", "published", "source", "language")


class BackfillError(ValueError):
    """A backfill line that cannot become an entry; ``reason`` is a slug."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def decode_line(line: bytes | str) -> str:
    """A line as text; raises BackfillError (``too_large``, ``invalid_utf8``)."""
    if len(line) > MAX_LINE_BYTES:
        raise BackfillError("too_large", f"line of {len(line)} bytes; the limit is "
                                         f"{MAX_LINE_BYTES}")
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BackfillError("invalid_utf8", f"line is not UTF-8: byte 0x{line[e.start]:02x} "
                                                f"at offset {e.start}") from e
    return line.lstrip("\ufeff")  # a BOM at the start of the file


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def parse_backfill_line(line: bytes | str, fetched_at: dt.datetime) -> Entry:
    """One JSON line (bytes as read, or text) → Entry. Raises BackfillError with a clear
    message and a reason slug (see the module docstring)."""
    text_line = decode_line(line)
    try:
        obj = json.loads(text_line)
    except json.JSONDecodeError as e:
        raise BackfillError("invalid_json", f"not valid JSON: {e.msg} at column {e.colno}") from e
    except (ValueError, RecursionError) as e:  # over-long integers, absurd nesting
        raise BackfillError("invalid_json", f"not valid JSON: {str(e)[:200]}") from e
    if not isinstance(obj, dict):
        raise BackfillError("invalid_json", "each line must be a JSON object")
    url, text = obj.get("url"), obj.get("text")
    if not isinstance(url, str) or not url.strip():
        raise BackfillError("missing_url", "'url' is required and must be a string")
    if not isinstance(text, str) or not text.strip():
        raise BackfillError("missing_text", "'text' is required and must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise BackfillError("too_large", f"'text' has {len(text)} characters; the limit is "
                                         f"{MAX_TEXT_CHARS}")
    for name in OPTIONAL_FIELDS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise BackfillError("wrong_type", f"'{name}' must be a string or null, not "
                                              f"{_type_name(value)}")
    if has_unstorable(url):
        raise BackfillError("bad_url", "'url' holds NUL or an unpaired surrogate")
    if len(url) > MAX_URL_CHARS:
        raise BackfillError("bad_url", f"'url' is longer than {MAX_URL_CHARS} characters")
    try:
        canonical = canonical_url(url)
    except ValueError as e:
        raise BackfillError("bad_url", str(e)) from e
    published = None
    if obj.get("published"):
        raw_date = obj["published"].strip()
        try:
            published = dt.datetime.fromisoformat(raw_date.replace("Z", "+00:00"))
        except ValueError as e:
            raise BackfillError("bad_date", f"'published' is not ISO 8601: "
                                            f"{storable(raw_date)[:60]!r}") from e
    title = clean_text(obj.get("title") or "")[:MAX_TITLE_CHARS]
    source = clean_text(obj.get("source") or "")[:MAX_NAME_CHARS] or host_of(canonical)
    return Entry(
        entry_id=stable_id(canonical), url=canonical, link=url.strip(), guid=canonical,
        feed_url="", source=source, title=title, summary="", content="",
        published_at=plausible_date(published, fetched_at), authors=(), categories=(),
        language_hint=language_code(obj.get("language")), topic_hint=None,
        fetched_at=fetched_at, body=clean_text(text))


def line_preview(line: bytes | str, limit: int = 120) -> str:
    """The first characters of a line for an error record, whatever its bytes."""
    if isinstance(line, bytes):
        line = line[:limit * 4].decode("utf-8", "replace")
    return storable(line[:limit])


class ParseBackfillFn(beam.DoFn):
    """JSON lines → Entries (main) and error records (``errors``)."""

    def __init__(self, location: str, clock=None):
        self._location = location
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.read = Metrics.counter(NAMESPACE, "entries_read")
        self.rejected = Metrics.counter(NAMESPACE, "entries_rejected")

    def process(self, line: bytes | str) -> Iterator[Any]:
        if not line.strip():
            return
        now = self._clock()
        self.read.inc()
        try:
            entry = parse_backfill_line(line, now)
        except BackfillError as e:
            self.rejected.inc()
            yield pvalue.TaggedOutput("errors", error_record(
                f"{self._location}: {line_preview(line)}", "", "entry", "read_backfill", e.reason,
                str(e), None, 1, now))
            return
        yield beam.window.TimestampedValue(entry, now.timestamp())


class ReadBackfill(beam.PTransform):
    """A JSON Lines file (any Beam filesystem) → Entries and error records."""

    def __init__(self, path: str, clock=None):
        super().__init__()
        self._path = path
        self._clock = clock

    def expand(self, pbegin):
        return (
            pbegin
            # Lines are read as bytes and decoded one by one: a line that is not UTF-8
            # becomes an error record instead of failing the whole read.
            | "ReadLines" >> beam.io.ReadFromText(self._path, coder=coders.BytesCoder())
            | "ParseLines" >> beam.ParDo(ParseBackfillFn(self._path, self._clock))
            .with_outputs("errors", main="entries")
        )
