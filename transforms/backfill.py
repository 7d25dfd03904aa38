"""Backfill: already-fetched articles from JSON Lines, joined into the same pipeline.

Each line is a JSON object with ``url`` and ``text`` (required) and ``title``,
``published`` (ISO 8601), ``source``, ``language`` (optional). Lines that are not valid
become error records naming the line's first characters; the run goes on.

Example::

    newsbeam ingest --articles articles.jsonl --output /tmp/out
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from schemas import Entry
from transforms.errors import error_record
from transforms.feeds import NAMESPACE, plausible_date
from transforms.text import clean_text
from transforms.urls import canonical_url, host_of, stable_id


class BackfillError(ValueError):
    """A backfill line that cannot become an entry; ``reason`` is a slug."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def parse_backfill_line(line: str, fetched_at: dt.datetime) -> Entry:
    """One JSON line → Entry. Raises BackfillError with a clear message."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise BackfillError("invalid_json", f"not valid JSON: {e.msg} at column {e.colno}") from e
    if not isinstance(obj, dict):
        raise BackfillError("invalid_json", "each line must be a JSON object")
    url, text = obj.get("url"), obj.get("text")
    if not isinstance(url, str) or not url.strip():
        raise BackfillError("missing_url", "'url' is required and must be a string")
    if not isinstance(text, str) or not text.strip():
        raise BackfillError("missing_text", "'text' is required and must be a non-empty string")
    try:
        canonical = canonical_url(url)
    except ValueError as e:
        raise BackfillError("bad_url", str(e)) from e
    published = None
    if obj.get("published"):
        try:
            published = dt.datetime.fromisoformat(str(obj["published"]).replace("Z", "+00:00"))
        except ValueError as e:
            raise BackfillError("bad_date", f"'published' is not ISO 8601: "
                                            f"{str(obj['published'])[:60]!r}") from e
    language = obj.get("language")
    language = str(language).lower()[:3] if isinstance(language, str) and language else None
    title = clean_text(str(obj.get("title") or ""))
    source = clean_text(str(obj.get("source") or "")) or host_of(canonical)
    return Entry(
        entry_id=stable_id(canonical), url=canonical, link=url, guid=canonical, feed_url="",
        source=source, title=title, summary="", content="",
        published_at=plausible_date(published, fetched_at), authors=(), categories=(),
        language_hint=language, topic_hint=None, fetched_at=fetched_at,
        body=clean_text(text))


class ParseBackfillFn(beam.DoFn):
    """JSON lines → Entries (main) and error records (``errors``)."""

    def __init__(self, location: str, clock=None):
        self._location = location
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.read = Metrics.counter(NAMESPACE, "entries_read")
        self.rejected = Metrics.counter(NAMESPACE, "entries_rejected")

    def process(self, line: str) -> Iterator[Any]:
        if not line.strip():
            return
        now = self._clock()
        self.read.inc()
        try:
            entry = parse_backfill_line(line, now)
        except BackfillError as e:
            self.rejected.inc()
            yield pvalue.TaggedOutput("errors", error_record(
                f"{self._location}: {line[:120]}", "", "entry", "read_backfill", e.reason,
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
            | "ReadLines" >> beam.io.ReadFromText(self._path)
            | "ParseLines" >> beam.ParDo(ParseBackfillFn(self._path, self._clock))
            .with_outputs("errors", main="entries")
        )
