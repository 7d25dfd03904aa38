"""JSON Feed (https://jsonfeed.org, versions 1.0 and 1.1) support.

feedparser only reads XML, so JSON feeds are recognised here and turned into plain
dicts shaped like feedparser's entries (``link``, ``id``, ``title``, ``summary``,
``content``, ``published_parsed``, ``authors``, ``tags``), which lets
:func:`transforms.feeds.parse.parse_feed` normalise both kinds with one code path.

Example::

    doc = parse_json_feed(b'{"version": "https://jsonfeed.org/version/1.1", "items": []}')
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

VERSION_PREFIX = "https://jsonfeed.org/version/"
JSON_TYPES = ("application/feed+json", "application/json")


class JsonFeedError(ValueError):
    """The document claims to be (or is served as) a JSON Feed but is not a valid one."""


class InvalidItem(dict):
    """Stands for an item that is not a JSON object; ``reason`` says what it was."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


@dataclass
class JsonFeed:
    """A JSON Feed reduced to what the pipeline needs, entries in feedparser's shape."""

    version: str
    title: str
    language: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)


def looks_like_json_feed(body: bytes, headers: Mapping[str, str]) -> bool:
    """True when the Content-Type says JSON, or the body is a JSON object naming a
    jsonfeed.org version (servers often send JSON feeds as text/plain or octet-stream)."""
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype in JSON_TYPES:
        return True
    head = body[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") and b"jsonfeed.org/version" in head


def _date(value: Any) -> dt.datetime | None:
    """RFC 3339 date from a JSON Feed, as aware UTC; None if absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # not a date, or year 1 with a positive offset
        return None


def _kind(value: Any) -> str:
    return {str: "string", list: "array", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _authors(item: Mapping[str, Any], top: Mapping[str, Any]) -> list[dict[str, str]]:
    # 1.1 has "authors" (a list); 1.0 had a single "author". Items inherit the feed's.
    for source in (item, top):
        found = source.get("authors")
        if not isinstance(found, list):
            single = source.get("author")
            found = [single] if isinstance(single, Mapping) else []
        names = [{"name": a["name"]} for a in found
                 if isinstance(a, Mapping) and isinstance(a.get("name"), str) and a["name"]]
        if names:
            return names
    return []


def _link(item: Mapping[str, Any], base: str | None) -> str:
    """The item's URL (else its external URL), resolved against ``base`` when relative."""
    link = (_text(item.get("url")) or _text(item.get("external_url"))).strip()
    if link and base:
        try:
            return urljoin(base, link)
        except ValueError:  # an ill-formed IPv6 literal and the like: reported by the caller
            return link
    return link


def _entry(item: Mapping[str, Any], top: Mapping[str, Any], base: str | None) -> dict[str, Any]:
    link = _link(item, base)
    item_id = item.get("id")
    content = []
    if _text(item.get("content_html")):
        content.append({"type": "text/html", "value": item["content_html"]})
    if _text(item.get("content_text")):
        content.append({"type": "text/plain", "value": item["content_text"]})
    published = _date(item.get("date_published")) or _date(item.get("date_modified"))
    tags = item.get("tags")
    tags = [{"term": t} for t in tags if isinstance(t, str) and t.strip()] \
        if isinstance(tags, list) else []
    return {
        "link": link,
        # The spec makes id a string, but 1.0 feeds in the wild use numbers.
        "id": str(item_id) if isinstance(item_id, (str, int)) and not isinstance(
            item_id, bool) else "",
        "title": _text(item.get("title")),
        "summary": _text(item.get("summary")),
        "content": content,
        "published_parsed": published.timetuple() if published else None,
        "authors": _authors(item, top),
        "tags": tags,
        "language": _text(item.get("language")) or None,
    }


def parse_json_feed(body: bytes, base: str | None = None) -> JsonFeed:
    """Parses a JSON Feed document; raises :class:`JsonFeedError` when it is not one.

    Items without a URL come back with an empty ``link``, and items that are not
    objects as :class:`InvalidItem`, so that the caller reports each of them. Relative
    item URLs are resolved against ``base`` (where the feed was fetched from). Fields of
    the wrong JSON type are treated as absent.
    """
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError) as e:
        # ValueError covers bad UTF-8, bad JSON and integers too long to convert.
        raise JsonFeedError(f"not valid JSON: {str(e)[:300]}") from e
    if not isinstance(doc, Mapping):
        raise JsonFeedError("a JSON Feed is a JSON object")
    version = doc.get("version")
    if not isinstance(version, str) or not version.startswith(VERSION_PREFIX):
        raise JsonFeedError(f"no jsonfeed.org version (got {str(version)[:80]!r})")
    items = doc.get("items")
    if not isinstance(items, list):
        raise JsonFeedError("a JSON Feed needs an 'items' list")
    return JsonFeed(
        version=version[len(VERSION_PREFIX):],
        title=_text(doc.get("title")),
        language=_text(doc.get("language")) or None,
        entries=[_entry(item, doc, base) if isinstance(item, Mapping)
                 else InvalidItem(f"item is a JSON {_kind(item)}, not an object")
                 for item in items],
    )
