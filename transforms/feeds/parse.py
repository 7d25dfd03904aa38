"""Feed stage: fetch each feed, parse it with feedparser, and normalise its entries.

Size: about 540 lines: the guards in front of feedparser (entities, character references,
compression), the entry normalisation behind it and the fetching DoFn, one path from bytes
to entries.

Each feed is fetched with our own :class:`~transforms.fetching.http.HttpClient` (timeouts, gzip,
redirects, SSRF guard) through a :class:`~transforms.fetching.politeness.PoliteFetcher` (per-host
limits, robots.txt), many feeds at once. The bytes plus response headers are handed to
``feedparser.parse``, so feedparser never touches the network, after two checks of our
own: a DTD that declares external, parameter or nested entities is removed before
parsing (no file is read, no entity bomb expands; the references are left unexpanded and
the rest of the feed is still read), and JSON Feeds (jsonfeed.org 1.0/1.1, which feedparser
cannot read) are parsed by :mod:`transforms.feeds.jsonfeed`. A body that is itself gzip (a
``feed.xml.gz`` served without Content-Encoding) is inflated under the size cap first.
Every entry becomes an :class:`~schemas.Entry` with a canonical URL, a stable GUID and a
plausible date or none.

Example::

    python -m pipelines.ingest --feeds https://example.org/rss.xml --output /tmp/out
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import logging
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin
from xml.parsers import expat

import apache_beam as beam
import feedparser
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from schemas import Entry, ErrorRecord, FeedSpec
from transforms.extraction.text import clean_text, has_unstorable, html_to_text, storable
from transforms.feeds.jsonfeed import (
    InvalidItem,
    JsonFeedError,
    looks_like_json_feed,
    parse_json_feed,
)
from transforms.fetching.http import FetchError, FetchPolicy, Response
from transforms.fetching.politeness import PoliteFetchFn, fetch_outcome
from transforms.fetching.urls import canonical_url, is_http_url, stable_id
from transforms.util import NAMESPACE, error_record, windowed

_LOG = logging.getLogger(__name__)
FEED_ACCEPT = ("application/rss+xml, application/atom+xml, application/feed+json, "
               "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1")
FEED_REFUSED_TYPES = ("image/", "audio/", "video/", "font/", "application/pdf",
                      "application/zip")
"""Content types that cannot be a feed; anything else is left to the parser to judge."""
MAX_FEED_BYTES = 10 * 1024 * 1024
EARLIEST_PLAUSIBLE = dt.datetime(1995, 1, 1, tzinfo=dt.UTC)
FUTURE_TOLERANCE = dt.timedelta(days=2)


@dataclass
class ParsedFeed:
    """Result of parsing one feed document."""

    title: str
    entries: list[Entry] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (url, reason, message)
    bozo: str | None = None
    reason: str = "malformed_feed"
    """Error reason when the feed yields nothing: malformed_feed, unsafe_xml, too_large."""
    kind: str = "xml"
    """xml (RSS/Atom/RDF via feedparser) or json (JSON Feed)."""
    dtd_removed: str | None = None
    """Why an unsafe DOCTYPE was removed before parsing, if one was."""


class _PrologDone(Exception):
    """Raised by the expat handler at the first element: the DTD has been seen."""


_ENTITY_DECL = re.compile(
    rb"<!ENTITY\s+(%\s*)?[^\s>]+\s+(SYSTEM|PUBLIC|\"[^\"]*\"|'[^']*')", re.I)
_PROLOG_LIMIT = 1024 * 1024


def unsafe_xml(body: bytes) -> str | None:
    """Why an XML document's DTD is unsafe to hand to a parser, or None.

    Refused: external entities (SYSTEM/PUBLIC, which could read local files or reach
    the network), parameter entities, and entities whose value refers to other
    entities (how "billion laughs" bombs grow). Plain internal entities such as
    ``<!ENTITY copy "(c)">`` are allowed. expat reads only the prolog, so nothing is
    expanded while checking; if expat cannot read the prolog (an encoding it lacks,
    ill-formed markup), the declarations are checked textually instead.
    """
    head = body[:_PROLOG_LIMIT]
    if b"entity" not in head.lower() and b"e\x00n\x00t\x00" not in head.lower():
        return None
    problems: list[str] = []

    def on_entity(name, is_parameter, value, base, system_id, public_id, notation):
        if system_id or public_id:
            problems.append(f"external entity {name!r}")
        elif is_parameter:
            problems.append(f"parameter entity {name!r}")
        elif value and ("&" in value or "%" in value):
            problems.append(f"entity {name!r} refers to other entities")

    def on_start(*_args):
        raise _PrologDone

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = on_entity
    parser.StartElementHandler = on_start
    try:
        parser.Parse(head, len(head) == len(body))
        finished = True
    except _PrologDone:
        finished = True
    except (expat.ExpatError, ValueError, LookupError):
        finished = False
    if not finished and not problems:
        text = head.decode("utf-16") if head.startswith((b"\xff\xfe", b"\xfe\xff")) else None
        decls = _ENTITY_DECL.findall(text.encode("utf-8") if text else head)
        for percent, value in decls:
            if percent or value.upper() in (b"SYSTEM", b"PUBLIC") or b"&" in value \
                    or b"%" in value:
                problems.append("entity declaration that could not be verified")
                break
    return "; ".join(problems[:3]) or None


_DOCTYPE = re.compile(rb"<!DOCTYPE\b", re.I)
_SUBSET_END = re.compile(rb"\]\s*>")


def strip_doctype(body: bytes) -> bytes | None:
    """``body`` without its DOCTYPE declaration (internal subset included), or None
    when it cannot be cut out safely (UTF-16/32 bodies, an unterminated declaration)."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in body[:64]:
        return None
    start_match = _DOCTYPE.search(body, 0, _PROLOG_LIMIT)
    if start_match is None:
        return None
    start = start_match.start()
    bracket = body.find(b"[", start)
    close = body.find(b">", start)
    if close == -1:
        return None
    if bracket != -1 and bracket < close:
        end_match = _SUBSET_END.search(body, bracket)
        if end_match is None:
            return None
        end = end_match.end()
    else:
        end = close + 1
    return body[:start] + body[end:]


def _gunzip(body: bytes, limit: int = MAX_FEED_BYTES) -> bytes:
    """Inflates a gzip body, refusing output beyond ``limit`` (ValueError)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(body, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"gzip body inflates beyond {limit} bytes")
    if not d.eof:
        raise ValueError("truncated gzip body")
    return out


def plausible_date(value: dt.datetime | None, reference: dt.datetime) -> dt.datetime | None:
    """``value`` if it lies between 1995 and ``reference`` + 2 days, else None.

    Feeds carry epoch dates (1970), placeholder years and clocks far in the future;
    such dates would create nonsense partitions, so they count as missing. Dates that
    cannot even be moved to UTC (year 1 with a positive offset) count as missing too.
    """
    if value is None:
        return None
    try:
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None
    if value < EARLIEST_PLAUSIBLE or value > reference + FUTURE_TOLERANCE:
        return None
    return value


def _struct_to_dt(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromtimestamp(calendar.timegm(value), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


MAX_TITLE_CHARS = 1000
"""Titles are cut here: a longer one is a feed's mistake (a body in the title element)."""
MAX_NAME_CHARS = 200
"""Outlet names, authors and categories are cut here."""
MAX_LIST_ITEMS = 50
"""At most this many authors and categories per entry."""
MAX_GUID_CHARS = 1000
"""A longer GUID is replaced by ``nb:`` + its hash: still unique, but small as a key."""
_LANG_CODE = re.compile(r"[a-z]{2,3}")


def language_code(value: Any) -> str | None:
    """The primary ISO 639 subtag of a declared language (``en-GB`` → ``en``), or None
    when the declaration is not one (a feed's free text, a number, a giant string)."""
    if not isinstance(value, str):
        return None
    code = value.strip().split("-", 1)[0].split("_", 1)[0].lower()
    return code if _LANG_CODE.fullmatch(code) else None


def _names(values: Any, key: str) -> tuple[str, ...]:
    """Distinct cleaned ``value[key]`` strings of a list of mappings, each cut short."""
    if not isinstance(values, list):
        return ()
    out = dict.fromkeys(
        clean_text(v[key])[:MAX_NAME_CHARS] for v in values
        if isinstance(v, Mapping) and isinstance(v.get(key), str) and v[key].strip())
    return tuple(name for name in out if name)[:MAX_LIST_ITEMS]


def _entry_text(entry: Mapping[str, Any]) -> tuple[str, str]:
    summary = entry.get("summary")
    summary = html_to_text(summary) if isinstance(summary, str) else ""
    contents = entry.get("content")
    content = ""
    for c in contents if isinstance(contents, list) else []:
        value = c.get("value") if isinstance(c, Mapping) else None
        text = html_to_text(value) if isinstance(value, str) else ""
        if len(text) > len(content):
            content = text
    return summary, content


_CHARREF = re.compile(rb"&#([xX][0-9a-fA-F]+|[0-9]+);?")


def _xml_char(code: int) -> bool:
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def _fix_charref(match: re.Match) -> bytes:
    ref = match.group(1)
    hexadecimal = ref[:1] in (b"x", b"X")
    digits = ref[1:].lstrip(b"0") if hexadecimal else ref.lstrip(b"0")
    if len(digits) > 8:  # beyond U+10FFFF whatever the digits are
        return b"&#xFFFD;"
    code = int(digits or b"0", 16 if hexadecimal else 10)
    return match.group(0) if _xml_char(code) else b"&#xFFFD;"


def repair_charrefs(body: bytes) -> bytes:
    """Numeric character references to characters XML forbids become U+FFFD.

    ``&#xD800;`` (a lone surrogate), ``&#0;`` or ``&#x110000;`` make the document
    ill-formed, and feedparser's fallback parser then raises on them (the surrogate
    cannot be encoded, the others are out of range), which would lose the whole feed
    for one character. Only ASCII-compatible encodings are rewritten; UTF-16/32
    bodies are left as they are.
    """
    if b"&#" not in body or body.startswith((b"\xff\xfe", b"\xfe\xff")) \
            or b"\x00" in body[:4]:
        return body
    return _CHARREF.sub(_fix_charref, body)


def feed_location(headers: Mapping[str, str], location: str) -> str:
    """The URL relative links are resolved against: the response's Content-Location
    (itself resolved against where the feed was fetched) or that location."""
    declared = headers.get("content-location") or headers.get("Content-Location") or ""
    if isinstance(declared, str) and declared.strip():
        try:
            joined = urljoin(location, declared.strip())
        except ValueError:
            joined = ""
        if is_http_url(joined):
            return joined
    return location


def _refused(reason: str, message: str) -> ParsedFeed:
    return ParsedFeed(title="", bozo=message, reason=reason)


def parse_feed(body: bytes, headers: Mapping[str, str], spec: FeedSpec,
               fetched_at: dt.datetime, location: str | None = None) -> ParsedFeed:
    """Parses feed bytes (RSS, Atom, RDF or JSON Feed) into normalised entries.

    Never raises on bad input: a document that yields nothing has ``bozo`` set and a
    ``reason`` (``malformed_feed``, ``unsafe_xml`` or ``too_large``); an entry that
    cannot be used is a ``problems`` item with its own reason. Relative entry links are
    resolved against ``xml:base`` (RSS, Atom, RDF: feedparser applies it), then the
    response's Content-Location, then ``location`` (where the feed was fetched from;
    default: the feed's URL).
    """
    base = feed_location(headers, location or spec.url)
    if body[:2] == b"\x1f\x8b":
        try:
            body = _gunzip(body)
        except (ValueError, zlib.error) as e:
            return _refused("too_large" if "beyond" in str(e) else "malformed_feed",
                            f"gzip-compressed feed body: {e}")
    if looks_like_json_feed(body, headers):
        try:
            doc = parse_json_feed(body, base)
        except JsonFeedError as e:
            return _refused("malformed_feed", f"JSON Feed: {e}")
        raw_entries: list[Any] = doc.entries
        title = clean_text(doc.title)[:MAX_TITLE_CHARS]
        result = ParsedFeed(title=title, kind="json")
        feed_lang = language_code(doc.language)
    else:
        problem = unsafe_xml(body)
        if problem:
            stripped = strip_doctype(body)
            # A second check: what is left must not declare entities either.
            if stripped is None or unsafe_xml(stripped):
                return _refused("unsafe_xml", f"feed refused before parsing: {problem}")
            body = stripped
        # The headers go to feedparser as they came: a header added here (even one naming
        # the base URL) would change how it picks a charset when the server sent none.
        # Links that are still relative after xml:base are resolved against ``base`` below.
        try:
            parsed = feedparser.parse(repair_charrefs(body), response_headers=dict(headers))
        except Exception as e:  # noqa: BLE001 - feedparser's fallback parser raises many types
            _LOG.info("feed %s: parser failed: %r", spec.url, e)
            return _refused("malformed_feed",
                            f"feed parser failed: {type(e).__name__}: {str(e)[:300]}")
        feed_meta = parsed.get("feed", {}) or {}
        raw_title = feed_meta.get("title")
        title = clean_text(raw_title)[:MAX_TITLE_CHARS] if isinstance(raw_title, str) else ""
        result = ParsedFeed(title=title, dtd_removed=problem)
        if parsed.get("bozo"):
            result.bozo = storable(
                str(parsed.get("bozo_exception", "unknown parse problem")))[:500]
        if problem:
            result.reason = "unsafe_xml"
            note = f"unsafe DOCTYPE removed before parsing ({problem})"
            result.bozo = f"{note}; {result.bozo}" if result.bozo else None
            _LOG.info("feed %s: %s", spec.url, note)
        feed_lang = language_code(feed_meta.get("language"))
        raw_entries = parsed.get("entries", [])
    source = (spec.name or title or spec.url)[:MAX_NAME_CHARS]
    guid_links: dict[str, str] = {}
    for index, raw in enumerate(raw_entries):
        where = f"{spec.url}#entry[{index}]"
        try:
            outcome = _normalise_entry(raw, where, spec, source, feed_lang, fetched_at,
                                       guid_links, base)
        except Exception as e:  # noqa: BLE001 - one odd entry must not cost the feed
            _LOG.warning("feed %s: entry %d could not be read: %r", spec.url, index, e)
            outcome = (where, "bad_entry",
                       f"entry could not be read: {type(e).__name__}: {str(e)[:300]}")
        if isinstance(outcome, Entry):
            result.entries.append(outcome)
        else:
            result.problems.append(outcome)
    return result


def entry_link_problem(link: str) -> tuple[str, str] | None:
    """(reason, message) when an entry link cannot be fetched, else None."""
    if has_unstorable(link):
        return "bad_url", "entry link holds NUL or an unpaired surrogate"
    if not is_http_url(link):
        scheme = link.split(":", 1)[0].lower() if ":" in link else ""
        if scheme in ("http", "https"):
            return "bad_url", f"entry link is not a valid http(s) URL: {storable(link)[:200]!r}"
        return "unsupported_scheme", f"entry link is not an http(s) URL: {link[:200]!r}"
    return None


def _normalise_entry(raw: Mapping[str, Any], where: str, spec: FeedSpec, source: str,
                     feed_lang: str | None, fetched_at: dt.datetime,
                     guid_links: dict[str, str], base: str) -> Entry | tuple[str, str, str]:
    """One parsed entry → an Entry, or a (url, reason, message) problem; a relative link
    (after feedparser applied ``xml:base``) is resolved against ``base``."""
    if isinstance(raw, InvalidItem):  # a JSON Feed item that is not an object
        return where, "bad_entry", raw.reason
    link = raw.get("link")
    link = link.strip() if isinstance(link, str) else ""
    if not link:
        return where, "missing_link", "feed entry has no link"
    # An ill-formed host such as "http://[::1" makes urljoin raise: reported just below.
    with contextlib.suppress(ValueError):
        link = urljoin(base, link)
    problem = entry_link_problem(link)
    if problem:
        return storable(link)[:500], *problem
    try:
        url = canonical_url(link)
    except ValueError as e:
        return link[:500], "bad_url", str(e)
    summary, content = _entry_text(raw)
    raw_title = raw.get("title")
    entry_title = clean_text(raw_title)[:MAX_TITLE_CHARS] if isinstance(raw_title, str) else ""
    guid = raw.get("id")
    guid = storable(guid).strip() if isinstance(guid, str) else ""
    if len(guid) > MAX_GUID_CHARS:
        guid = "nb:" + stable_id(guid)
    if not guid:
        # No GUID: derive one from what identifies the item for this feed.
        guid = "nb:" + stable_id(spec.url, url)
    elif guid in guid_links and guid_links[guid] != url:
        # A GUID reused for a different article: keep both, make the GUID unique.
        guid = f"{guid}#nb:{stable_id(url)}"
    guid_links.setdefault(guid, url)
    published = plausible_date(
        _struct_to_dt(raw.get("published_parsed") or raw.get("updated_parsed")), fetched_at)
    return Entry(
        entry_id=stable_id(url), url=url, link=link, guid=guid, feed_url=spec.url,
        source=source, title=entry_title, summary=summary, content=content,
        published_at=published, authors=_names(raw.get("authors"), "name"),
        categories=_names(raw.get("tags"), "term"),
        language_hint=spec.language or feed_lang, topic_hint=spec.topic,
        fetched_at=fetched_at)


def feed_request(headers: Mapping[str, str] | None = None,
                 spec: FeedSpec | None = None) -> dict[str, Any]:
    """The GET arguments of a feed fetch, the same in every mode (batch, streaming,
    watch); ``headers`` carries the validators of a conditional GET, ``spec`` the feed's
    own headers (auth, cookies: sent to the feed's origin only)."""
    args: dict[str, Any] = {"accept": FEED_ACCEPT, "refused_types": FEED_REFUSED_TYPES}
    if headers:
        args["headers"] = dict(headers)
    if spec is not None and spec.credentials:
        args["origin_headers"] = dict(spec.credentials)
    return args


class FetchFeedsFn(PoliteFetchFn):
    """Fetches and parses feeds, many at once; entries on the main output, errors tagged.

    Each element is queued on the worker's :class:`PoliteFetcher` (per-host limits,
    robots.txt, circuit breaker; see :class:`~transforms.fetching.politeness.PoliteFetchFn`) and
    handled when its fetch completes. Parsing runs on the bundle thread.
    """

    fetcher_name = "fetch-feed"

    def __init__(self, policy: FetchPolicy, clock=None, threads: int = 16, resolver=None):
        super().__init__(policy, threads, resolver)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.feeds_ok = Metrics.counter(NAMESPACE, "feeds_fetched")
        self.feeds_failed = Metrics.counter(NAMESPACE, "feeds_failed")
        self.feeds_bozo = Metrics.counter(NAMESPACE, "feeds_ill_formed")
        self.feeds_json = Metrics.counter(NAMESPACE, "feeds_json")
        self.feeds_dtd_removed = Metrics.counter(NAMESPACE, "feeds_unsafe_dtd_removed")
        self.entries = Metrics.counter(NAMESPACE, "entries_read")
        self.entry_errors = Metrics.counter(NAMESPACE, "entries_rejected")
        self.latency = Metrics.distribution(NAMESPACE, "feed_fetch_ms")

    def process(self, spec: FeedSpec, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[Any]:
        if spec.kind != "feed":
            yield from self._sitemap(spec, window)
            yield from self.completed()
            return
        yield from self.fetch(spec.url, (spec, self._clock()), timestamp, window,
                              **feed_request(spec=spec))

    def _sitemap(self, spec: FeedSpec, window: Any) -> Iterator[Any]:
        """Reads a sitemap source here, its documents one after another (an index names
        the next ones), through the same polite fetcher."""
        from transforms.feeds.polling import FeedState
        from transforms.feeds.sitemaps import poll_sitemap

        fetched_at = self._clock()
        result = poll_sitemap(self._fetcher, spec, FeedState(), fetched_at)
        if result.status == "failed":
            self.feeds_failed.inc()
        else:
            self.feeds_ok.inc()
        for error in result.errors:
            if error.level == "entry":
                self.entries.inc()
                self.entry_errors.inc()
            yield pvalue.TaggedOutput("errors", windowed(error, fetched_at.timestamp(),
                                                         window))
        for entry in result.entries:
            self.entries.inc()
            yield windowed(entry, fetched_at.timestamp(), window)

    def _fail(self, reason: str) -> None:
        self.feeds_failed.inc()
        Metrics.counter(NAMESPACE, f"feed_error_{reason}").inc()

    def handle(self, payload: tuple[FeedSpec, dt.datetime], response: Response | None,
               error: FetchError | None, timestamp: Any, window: Any) -> Iterator[Any]:
        spec, fetched_at = payload
        if error is not None:
            self._fail(error.reason)
            yield pvalue.TaggedOutput("errors", windowed(error_record(
                error.url, spec.url, "feed", "fetch_feed", error.reason, error.message,
                error.status, error.attempts, fetched_at, spec.name, spec.language),
                timestamp, window))
            return
        self.latency.update(int(response.elapsed * 1000))
        parsed = parse_feed(response.body, response.headers, spec, fetched_at,
                            location=response.url)
        if parsed.dtd_removed:
            self.feeds_dtd_removed.inc()
        if not parsed.entries and parsed.bozo:
            self._fail(parsed.reason)
            yield pvalue.TaggedOutput("errors", windowed(error_record(
                spec.url, spec.url, "feed", "parse_feed", parsed.reason,
                f"feed could not be parsed: {parsed.bozo}", response.status,
                response.attempts, fetched_at, spec.name, spec.language), timestamp, window))
            return
        self.feeds_ok.inc()
        if parsed.kind == "json":
            self.feeds_json.inc()
        if parsed.bozo:
            self.feeds_bozo.inc()
            _LOG.info("feed %s is ill-formed but yielded entries: %s", spec.url, parsed.bozo)
        for url, reason, message in parsed.problems:
            self.entries.inc()
            self.entry_errors.inc()
            yield pvalue.TaggedOutput("errors", windowed(error_record(
                url, spec.url, "entry", "parse_feed", reason, message, None, 1, fetched_at,
                spec.name, spec.language), timestamp, window))
        for entry in parsed.entries:
            self.entries.inc()
            # Event time is the fetch time: published dates are too unreliable to drive
            # watermarks, and dedup state expires relative to when entries were seen.
            yield windowed(entry, fetched_at.timestamp(), window)


class ReadFeeds(beam.PTransform):
    """FeedSpecs → Entries (main output ``entries``) and ErrorRecords (``errors``)."""

    def __init__(self, policy: FetchPolicy, clock=None, threads: int = 16, resolver=None):
        super().__init__()
        self._policy = policy
        self._clock = clock
        self._threads = threads
        self._resolver = resolver

    def expand(self, specs):
        return (
            specs
            # Spread feeds over workers before the slow network step.
            | "SpreadFeeds" >> beam.Reshuffle()
            | "FetchAndParseFeeds" >> beam.ParDo(
                FetchFeedsFn(self._policy, self._clock, self._threads, self._resolver))
            .with_outputs("errors", main="entries")
        )


__all__ = ["ErrorRecord", "FetchFeedsFn", "ParsedFeed", "ReadFeeds", "entry_link_problem",
           "feed_location", "feed_request", "fetch_outcome", "language_code", "parse_feed",
           "plausible_date", "repair_charrefs", "strip_doctype", "unsafe_xml"]
