"""Sitemaps and Google News sitemaps as sources beside feeds.

A YAML ``--feeds`` file may list, beside ``url:`` feeds::

    feeds:
      - sitemap: https://example.org/news-sitemap.xml     # a sitemap or a sitemap index
        max_urls: 500                                     # optional limits, see below
      - site: https://example.org                         # the Sitemap: lines of robots.txt

Each page URL (``<url><loc>``) becomes an entry like a feed item, fetched and extracted
like any other. A Google News sitemap's ``<news:news>`` gives the entry its title
(``news:title``), publication time (``news:publication_date``), language
(``news:publication/news:language``, a hint for detection), outlet name
(``news:publication/news:name``) and categories (``news:keywords``); a plain ``<lastmod>``
stands in for a missing publication date. Sitemap indexes are followed, gzip'd sitemaps
(``.xml.gz`` or a gzip body) are inflated, and every document is fetched through the
same polite path as feeds and pages (robots.txt, per-host limits, circuit breaker, the
feed's own credentials on its origin); the source's own document is fetched with the
validators of its last answer, so an unchanged sitemap costs a ``304``.

Limits, per source (YAML keys, defaults in :class:`schemas.SitemapLimits`): ``max_urls``
page URLs in all (1000; URLs beyond it are left out, in document order, with one
``too_many_urls`` error record), ``max_depth`` levels of nested indexes below the
source's document (3; deeper ones are skipped with a ``too_deep`` record), and
``max_bytes`` per document after decompression (10 MiB, and never above
``--max-page-bytes``; ``too_large``). A document that is not XML, declares entities or is
not a ``<urlset>`` / ``<sitemapindex>`` is one feed-level error record
(``malformed_sitemap``, ``unsafe_xml``, ``not_a_sitemap``); a ``<url>`` without a usable
``<loc>`` is one entry-level record. The XML is parsed with defusedxml, which refuses
entity declarations and external references.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from protego import Protego

from schemas import Entry, ErrorRecord, FeedSpec, SitemapLimits
from transforms.extraction.text import clean_text
from transforms.feeds.parse import (
    FEED_REFUSED_TYPES,
    MAX_TITLE_CHARS,
    entry_link_problem,
    language_code,
    plausible_date,
)
from transforms.feeds.polling import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    FeedState,
    PollResult,
    after_failure,
    after_response,
    conditional_headers,
)
from transforms.fetching.http import FetchError, Response
from transforms.fetching.urls import canonical_url, host_of, stable_id
from transforms.util import error_record

SITEMAP_ACCEPT = "application/xml, text/xml;q=0.9, application/x-gzip;q=0.8, */*;q=0.1"
KINDS = ("feed", "sitemap", "site")
"""Source kinds of :class:`schemas.FeedSpec`."""
MAX_NAME_CHARS = 200


@dataclass
class SitemapDoc:
    """One parsed sitemap document: page URLs (urlset) or child sitemaps (index)."""

    kind: str = ""
    urls: list[dict[str, Any]] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    reason: str | None = None
    """Why the document could not be read at all (then ``message`` says more)."""
    message: str = ""


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _child(element: Any, name: str) -> Any:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _text(element: Any, *path: str) -> str:
    for name in path:
        if element is None:
            return ""
        element = _child(element, name)
    return (element.text or "").strip() if element is not None else ""


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body inflated (others as they are), refusing more than ``limit`` bytes."""
    if body[:2] != b"\x1f\x8b":
        return body
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(body, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise OverflowError(f"gzip'd sitemap inflates beyond {limit} bytes")
    if not d.eof:
        raise ValueError("truncated gzip'd sitemap")
    return out


def parse_sitemap(body: bytes, location: str, max_bytes: int) -> SitemapDoc:
    """Parses one sitemap document (gzip'd or not); never raises on bad input."""
    try:
        data = inflate(body, max_bytes)
    except OverflowError as e:
        return SitemapDoc(reason="too_large", message=str(e))
    except (ValueError, zlib.error) as e:
        return SitemapDoc(reason="malformed_sitemap", message=f"bad gzip data: {e}")
    if len(data) > max_bytes:
        return SitemapDoc(reason="too_large", message=f"sitemap exceeds {max_bytes} bytes")
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as e:  # entity declarations, external references
        return SitemapDoc(reason="unsafe_xml",
                          message=f"refused: {type(e).__name__}: {str(e)[:300]}")
    except (SafeET.ParseError, ValueError, TypeError) as e:
        return SitemapDoc(reason="malformed_sitemap", message=f"not XML: {str(e)[:300]}")
    kind = _local(root.tag)
    if kind == "sitemapindex":
        children = [urljoin(location, _text(s, "loc")) for s in root
                    if _local(s.tag) == "sitemap" and _text(s, "loc")]
        return SitemapDoc(kind="index", children=children)
    if kind != "urlset":
        return SitemapDoc(reason="not_a_sitemap",
                          message=f"the root element is <{kind or '?'}>, not <urlset> or "
                                  "<sitemapindex>")
    urls = []
    for index, u in enumerate(x for x in root if _local(x.tag) == "url"):
        news = _child(u, "news")
        urls.append({
            "index": index,
            "loc": _text(u, "loc"),
            "lastmod": _text(u, "lastmod"),
            "title": _text(news, "title"),
            "published": _text(news, "publication_date"),
            "name": _text(news, "publication", "name"),
            "language": _text(news, "publication", "language"),
            "keywords": _text(news, "keywords"),
        })
    return SitemapDoc(kind="urlset", urls=urls)


def w3c_datetime(value: str) -> dt.datetime | None:
    """A W3C datetime (``2024-11-25``, ``2024-11-25T06:30:00Z``, with offset), UTC, or
    None when it cannot be read (a date alone means midnight UTC)."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def sitemap_entry(item: Mapping[str, Any], spec: FeedSpec, sitemap_url: str,
                  fetched_at: dt.datetime) -> Entry | tuple[str, str, str]:
    """One ``<url>`` → an Entry, or a (url, reason, message) problem."""
    where = f"{sitemap_url}#url[{item['index']}]"
    loc = item["loc"]
    if not loc:
        return where, "missing_link", "sitemap <url> has no <loc>"
    link = urljoin(sitemap_url, loc)
    problem = entry_link_problem(link)
    if problem:
        return link[:500], *problem
    try:
        url = canonical_url(link)
    except ValueError as e:
        return link[:500], "bad_url", str(e)
    published = plausible_date(w3c_datetime(item["published"]) or
                               w3c_datetime(item["lastmod"]), fetched_at)
    source = (spec.name or clean_text(item["name"]) or host_of(spec.url))[:MAX_NAME_CHARS]
    keywords = tuple(k.strip() for k in item["keywords"].split(",") if k.strip())[:20]
    return Entry(
        entry_id=stable_id(url), url=url, link=link, guid=link[:1000], feed_url=spec.url,
        source=source, title=clean_text(item["title"])[:MAX_TITLE_CHARS], summary="",
        content="", published_at=published, authors=(), categories=keywords,
        language_hint=spec.language or language_code(item["language"]),
        topic_hint=spec.topic, fetched_at=fetched_at)


def robots_sitemaps(body: bytes, robots_url: str) -> list[str]:
    """The ``Sitemap:`` URLs of a robots.txt, absolute, in order, without repeats."""
    rules = Protego.parse(body.decode("utf-8", "replace"))
    out: list[str] = []
    for url in rules.sitemaps:
        absolute = urljoin(robots_url, url.strip())
        if absolute not in out:
            out.append(absolute)
    return out


def sitemap_request(spec: FeedSpec, headers: Mapping[str, str] | None = None,
                    max_bytes: int | None = None) -> dict[str, Any]:
    """GET arguments of a sitemap (or robots.txt) fetch of ``spec``."""
    args: dict[str, Any] = {"accept": SITEMAP_ACCEPT, "refused_types": FEED_REFUSED_TYPES}
    if headers:
        args["headers"] = dict(headers)
    if max_bytes:
        args["max_bytes"] = max_bytes
    if spec.credentials:
        args["origin_headers"] = dict(spec.credentials)
    return args


class _Reader:
    """Reads one sitemap source: documents, nested indexes, limits, errors."""

    def __init__(self, fetcher: Any, spec: FeedSpec, now: dt.datetime):
        self.fetcher = fetcher
        self.spec = spec
        self.now = now
        self.limits = spec.limits or SitemapLimits()
        self.entries: list[Entry] = []
        self.errors: list[ErrorRecord] = []
        self.seen_urls: set[str] = set()
        self.visited: set[str] = set()
        self.left_out = 0

    def error(self, url: str, level: str, stage: str, reason: str, message: str,
              status: int | None = None, attempts: int = 1) -> None:
        self.errors.append(error_record(url, self.spec.url, level, stage, reason, message,
                                        status, attempts, self.now, self.spec.name,
                                        self.spec.language))

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.fetcher.fetch(url, **sitemap_request(self.spec, headers,
                                                         self.limits.max_bytes))

    def read_document(self, url: str, response: Response, depth: int) -> SitemapDoc:
        """Parses a fetched document and takes its URLs or follows its children."""
        doc = parse_sitemap(response.body, response.url, self.limits.max_bytes)
        if doc.reason:
            self.error(url, "feed", "parse_sitemap", doc.reason,
                       f"sitemap {url[:300]}: {doc.message}", response.status,
                       response.attempts)
            return doc
        if doc.kind == "index":
            self.follow(url, doc.children, depth)
            return doc
        for item in doc.urls:
            if len(self.seen_urls) >= self.limits.max_urls:
                self.left_out += 1
                continue
            outcome = sitemap_entry(item, self.spec, response.url, self.now)
            if isinstance(outcome, Entry):
                if outcome.url in self.seen_urls:
                    continue  # listed twice by this source: one entry
                self.seen_urls.add(outcome.url)
                self.entries.append(outcome)
            else:
                self.error(outcome[0], "entry", "parse_sitemap", outcome[1], outcome[2])
        return doc

    def follow(self, parent: str, children: list[str], depth: int) -> None:
        """Reads the sitemaps an index (or robots.txt) names, one level down."""
        fresh = [c for c in children if c not in self.visited]
        if fresh and depth + 1 > self.limits.max_depth:
            self.error(parent, "feed", "parse_sitemap", "too_deep",
                       f"{len(fresh)} sitemap(s) named by {parent[:300]} lie deeper than "
                       f"max_depth {self.limits.max_depth}; not read")
            return
        for child in fresh:
            self.visited.add(child)
            if len(self.seen_urls) >= self.limits.max_urls:
                self.error(child, "feed", "fetch_sitemap", "too_many_urls",
                           f"max_urls {self.limits.max_urls} reached; sitemap not read")
                continue
            try:
                response = self.fetch(child)
            except FetchError as e:
                self.error(e.url, "feed", "fetch_sitemap", e.reason, e.message, e.status,
                           e.attempts)
                continue
            self.read_document(child, response, depth + 1)

    def finish(self) -> None:
        if self.left_out:
            self.error(self.spec.url, "feed", "parse_sitemap", "too_many_urls",
                       f"{self.left_out} page URL(s) beyond max_urls "
                       f"{self.limits.max_urls} left out")


def poll_sitemap(fetcher: Any, spec: FeedSpec, state: FeedState, now: dt.datetime,
                 base: float = DEFAULT_BACKOFF, cap: float = DEFAULT_MAX_BACKOFF) -> PollResult:
    """Reads one sitemap source (kind ``sitemap`` or ``site``) through ``fetcher`` (a
    :class:`~transforms.fetching.politeness.PoliteFetcher`): entries, errors and the
    source's next state, as :func:`transforms.feeds.polling.poll_outcome` gives a feed.

    The source's own document (the sitemap, or robots.txt of a site) is fetched with the
    validators of ``state``; a 304 lists nothing. A failure to fetch or read it fails the
    source (it backs off like a feed); failures further down are error records while the
    rest is read.
    """
    t = now.timestamp()
    reader = _Reader(fetcher, spec, now)
    top = spec.url if spec.kind == "sitemap" else urljoin(spec.url, "/robots.txt")
    reader.visited.add(top)
    try:
        response = reader.fetch(top, conditional_headers(state))
    except FetchError as e:
        reader.error(e.url, "feed", "fetch_sitemap", e.reason, e.message, e.status,
                     e.attempts)
        return PollResult(spec, "failed", after_failure(state, e.retry_after, t, base, cap),
                          errors=reader.errors)
    if response.status == 304:
        return PollResult(spec, "not_modified", after_response(state, 304, response.headers, t))
    if spec.kind == "site":
        named = robots_sitemaps(response.body, response.url)
        if not named:
            reader.error(top, "feed", "parse_sitemap", "no_sitemaps",
                         f"{top}: robots.txt names no Sitemap")
            return PollResult(spec, "failed", after_failure(state, None, t, base, cap),
                              errors=reader.errors)
        reader.follow(top, named, -1)  # the named sitemaps are the source's own level
    else:
        doc = reader.read_document(top, response, 0)
        if doc.reason:
            return PollResult(spec, "failed", after_failure(state, None, t, base, cap),
                              errors=reader.errors)
    reader.finish()
    return PollResult(spec, "fetched", after_response(state, response.status,
                                                      response.headers, t),
                      entries=reader.entries, errors=reader.errors)
