"""Feed stage: fetch each feed, parse it with feedparser, and normalise its entries.

Each feed is fetched with our own :class:`~transforms.http.HttpClient` (timeouts, gzip,
redirects, SSRF guard) and the bytes plus response headers are handed to
``feedparser.parse``, so feedparser never touches the network. Every entry becomes an
:class:`~schemas.Entry` with a canonical URL, a stable GUID and a plausible date or none.

Example::

    python -m pipelines.ingest --feeds https://example.org/rss.xml --output /tmp/out
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import feedparser
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from schemas import Entry, ErrorRecord, FeedSpec
from transforms.errors import error_record
from transforms.http import FetchError, FetchPolicy, HttpClient
from transforms.text import clean_text, html_to_text
from transforms.urls import canonical_url, is_http_url, stable_id

_LOG = logging.getLogger(__name__)
NAMESPACE = "newsbeam"
FEED_ACCEPT = ("application/rss+xml, application/atom+xml, application/feed+json, "
               "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1")
EARLIEST_PLAUSIBLE = dt.datetime(1995, 1, 1, tzinfo=dt.UTC)
FUTURE_TOLERANCE = dt.timedelta(days=2)


@dataclass
class ParsedFeed:
    """Result of parsing one feed document."""

    title: str
    entries: list[Entry] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (url, reason, message)
    bozo: str | None = None


def plausible_date(value: dt.datetime | None, reference: dt.datetime) -> dt.datetime | None:
    """``value`` if it lies between 1995 and ``reference`` + 2 days, else None.

    Feeds carry epoch dates (1970), placeholder years and clocks far in the future;
    such dates would create nonsense partitions, so they count as missing.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    if value < EARLIEST_PLAUSIBLE or value > reference + FUTURE_TOLERANCE:
        return None
    return value


def _struct_to_dt(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromtimestamp(calendar.timegm(value), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _entry_text(entry: Mapping[str, Any]) -> tuple[str, str]:
    summary = html_to_text(str(entry.get("summary", "") or ""))
    contents = entry.get("content") or []
    content = ""
    for c in contents:
        text = html_to_text(str(c.get("value", "") or ""))
        if len(text) > len(content):
            content = text
    return summary, content


def parse_feed(body: bytes, headers: Mapping[str, str], spec: FeedSpec,
               fetched_at: dt.datetime) -> ParsedFeed:
    """Parses feed bytes into normalised entries. Never raises on bad input."""
    parsed = feedparser.parse(body, response_headers=dict(headers))
    feed_meta = parsed.get("feed", {}) or {}
    title = clean_text(str(feed_meta.get("title", "") or ""))
    result = ParsedFeed(title=title)
    if parsed.get("bozo"):
        result.bozo = str(parsed.get("bozo_exception", "unknown parse problem"))[:500]
    feed_lang = (str(feed_meta.get("language", "") or "").split("-")[0].lower() or None)
    source = spec.name or title or spec.url
    guid_links: dict[str, str] = {}
    for index, raw in enumerate(parsed.get("entries", [])):
        link = str(raw.get("link", "") or "").strip()
        if not link:
            result.problems.append((f"{spec.url}#entry[{index}]", "missing_link",
                                    "feed entry has no link"))
            continue
        if not is_http_url(link):
            result.problems.append((link[:500], "unsupported_scheme",
                                    f"entry link is not an http(s) URL: {link[:200]!r}"))
            continue
        url = canonical_url(link)
        summary, content = _entry_text(raw)
        entry_title = clean_text(str(raw.get("title", "") or ""))
        guid = str(raw.get("id", "") or "").strip()
        if not guid:
            # No GUID: derive one from what identifies the item for this feed.
            guid = "nb:" + stable_id(spec.url, url)
        elif guid in guid_links and guid_links[guid] != url:
            # A GUID reused for a different article: keep both, make the GUID unique.
            guid = f"{guid}#nb:{stable_id(url)}"
        guid_links.setdefault(guid, url)
        published = plausible_date(
            _struct_to_dt(raw.get("published_parsed") or raw.get("updated_parsed")), fetched_at)
        authors = tuple(dict.fromkeys(
            clean_text(str(a.get("name", ""))) for a in (raw.get("authors") or [])
            if isinstance(a, Mapping) and a.get("name")))
        categories = tuple(dict.fromkeys(
            clean_text(str(t.get("term", "")))[:200] for t in (raw.get("tags") or [])
            if isinstance(t, Mapping) and t.get("term")))
        result.entries.append(Entry(
            entry_id=stable_id(url), url=url, link=link, guid=guid, feed_url=spec.url,
            source=source, title=entry_title, summary=summary, content=content,
            published_at=published, authors=authors, categories=categories,
            language_hint=spec.language or feed_lang, topic_hint=spec.topic,
            fetched_at=fetched_at))
    return result


class FetchFeedsFn(beam.DoFn):
    """Fetches and parses one feed per element; entries on the main output, errors tagged."""

    def __init__(self, policy: FetchPolicy, clock=None):
        self._policy = policy
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._client: HttpClient | None = None
        self.feeds_ok = Metrics.counter(NAMESPACE, "feeds_fetched")
        self.feeds_failed = Metrics.counter(NAMESPACE, "feeds_failed")
        self.feeds_bozo = Metrics.counter(NAMESPACE, "feeds_ill_formed")
        self.entries = Metrics.counter(NAMESPACE, "entries_read")
        self.entry_errors = Metrics.counter(NAMESPACE, "entries_rejected")
        self.latency = Metrics.distribution(NAMESPACE, "feed_fetch_ms")

    def setup(self) -> None:
        self._client = HttpClient(self._policy)

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()

    def process(self, spec: FeedSpec) -> Iterator[Any]:
        assert self._client is not None
        fetched_at = self._clock()
        start = dt.datetime.now(dt.UTC)
        try:
            response = self._client.get(spec.url, accept=FEED_ACCEPT)
        except FetchError as e:
            self.feeds_failed.inc()
            yield pvalue.TaggedOutput("errors", error_record(
                e.url, spec.url, "feed", "fetch_feed", e.reason, e.message, e.status,
                e.attempts, fetched_at))
            return
        self.latency.update(int((dt.datetime.now(dt.UTC) - start).total_seconds() * 1000))
        parsed = parse_feed(response.body, response.headers, spec, fetched_at)
        if not parsed.entries and parsed.bozo:
            self.feeds_failed.inc()
            yield pvalue.TaggedOutput("errors", error_record(
                spec.url, spec.url, "feed", "parse_feed", "malformed_feed",
                f"feed could not be parsed: {parsed.bozo}", response.status,
                response.attempts, fetched_at))
            return
        self.feeds_ok.inc()
        if parsed.bozo:
            self.feeds_bozo.inc()
            _LOG.info("feed %s is ill-formed but yielded entries: %s", spec.url, parsed.bozo)
        for url, reason, message in parsed.problems:
            self.entries.inc()
            self.entry_errors.inc()
            yield pvalue.TaggedOutput("errors", error_record(
                url, spec.url, "entry", "parse_feed", reason, message, None, 1, fetched_at))
        for entry in parsed.entries:
            self.entries.inc()
            # Event time is the fetch time: published dates are too unreliable to drive
            # watermarks, and dedup state expires relative to when entries were seen.
            yield beam.window.TimestampedValue(entry, fetched_at.timestamp())


class ReadFeeds(beam.PTransform):
    """FeedSpecs → Entries (main output ``entries``) and ErrorRecords (``errors``)."""

    def __init__(self, policy: FetchPolicy, clock=None):
        super().__init__()
        self._policy = policy
        self._clock = clock

    def expand(self, specs):
        return (
            specs
            # Spread feeds over workers before the slow network step.
            | "SpreadFeeds" >> beam.Reshuffle()
            | "FetchAndParseFeeds" >> beam.ParDo(FetchFeedsFn(self._policy, self._clock))
            .with_outputs("errors", main="entries")
        )


__all__ = ["ErrorRecord", "FetchFeedsFn", "ParsedFeed", "ReadFeeds", "parse_feed",
           "plausible_date"]
