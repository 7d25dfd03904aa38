"""Reading subscription lists: feed URLs, OPML files, plain text lists and YAML configs.

``newsbeam ingest --feeds SOURCE`` accepts, for each SOURCE:

* an http(s) URL: one feed;
* an OPML file (``.opml``/``.xml``), parsed with ``listparser``;
* a YAML file (``.yaml``/``.yml``) with a top-level ``feeds:`` list whose items are a URL
  string or a mapping with ``url`` and optional ``name``, ``topic``, ``language``, and the
  request settings of :mod:`transforms.feeds.credentials` (``headers``, ``headers_env``,
  ``cookies``, ``cookies_env``, ``auth``); instead of ``url``, an entry may name a
  ``sitemap`` (a sitemap or sitemap index) or a ``site`` (whose robots.txt names its
  sitemaps), with optional ``max_urls``, ``max_depth``, ``max_bytes``
  (:mod:`transforms.feeds.sitemaps`);
* any other file: one URL per line, ``#`` starts a comment.

Sources are read when the pipeline is built (they are small), so a typo fails at once
with a clear message instead of deep inside a running job: a SOURCE that is neither an
http(s) URL nor a readable file raises :class:`SourceError`. Everything else is a
problem that becomes an error record (``level=feed``, ``stage=read_sources``,
``reason=bad_source``) while the other sources are read: an entry that is not a valid
http(s) URL or has a bad option, a line that is not UTF-8, and a whole file that cannot
be parsed (YAML that does not parse, an OPML file that is not XML or not OPML). The
command line then refuses to start when no valid feed is left (``pipelines/ingest.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml.ElementTree as SafeET
import listparser
import yaml

from schemas import FeedSpec, SitemapLimits
from transforms.extraction.text import has_unstorable
from transforms.feeds.credentials import KEYS as CREDENTIAL_KEYS
from transforms.feeds.credentials import CredentialError, request_credentials
from transforms.fetching.urls import is_http_url
from transforms.topics.taxonomy import MEDIA_TOPICS

_LANG = re.compile(r"^[a-z]{2,3}$")


def _media_topics() -> frozenset[str]:
    return frozenset(MEDIA_TOPICS)


class SourceError(ValueError):
    """A subscription source that cannot be read at all (missing file, bad YAML)."""


@dataclass
class Subscriptions:
    """Feeds read from all sources, plus the entries that were refused and why."""

    feeds: list[FeedSpec] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (location, message)

    def add(self, spec: FeedSpec, location: str) -> None:
        if has_unstorable(spec.url):
            self.problems.append((location, "feed URL holds NUL or an unpaired surrogate"))
        elif not is_http_url(spec.url):
            self.problems.append((location, f"not an http(s) feed URL: {spec.url[:200]!r}"))
        elif spec.language is not None and not _LANG.match(spec.language):
            self.problems.append((location, f"language must be an ISO 639 code, got "
                                            f"{spec.language!r}"))
        elif spec.topic is not None and spec.topic not in _media_topics():
            self.problems.append((location, f"unknown topic {spec.topic[:80]!r}; use one of "
                                            f"{', '.join(sorted(_media_topics()))}"))
        elif all(f.url != spec.url for f in self.feeds):
            self.feeds.append(spec)


def _from_yaml(path: Path, subs: Subscriptions) -> None:
    try:
        doc = yaml.safe_load(path.read_bytes())
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        # PyYAML reads the bytes' encoding itself; bad bytes are a YAMLError too.
        subs.problems.append((str(path), f"invalid YAML: {_first_line(e)}"))
        return
    items = doc.get("feeds") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        subs.problems.append((str(path), "expected a top-level 'feeds:' list"))
        return
    for i, item in enumerate(items):
        where = f"{path}#feeds[{i}]"
        if isinstance(item, str):
            subs.add(FeedSpec(url=item.strip()), where)
        elif isinstance(item, dict) and any(isinstance(item.get(k), str) for k in SOURCE_KEYS):
            given = [k for k in SOURCE_KEYS if k in item]
            if len(given) > 1:
                subs.problems.append((where, f"give one of {', '.join(SOURCE_KEYS)}, not "
                                             f"{' and '.join(given)}"))
                continue
            key = given[0]
            unknown = (set(item) - {key, "name", "topic", "language"} - CREDENTIAL_KEYS
                       - (set() if key == "url" else LIMIT_KEYS))
            if unknown:
                subs.problems.append((where, f"unknown keys {sorted(map(str, unknown))}"))
                continue
            try:
                limits = _limits(item)
            except ValueError as e:
                subs.problems.append((where, str(e)))
                continue
            wrong = [k for k in ("name", "topic", "language")
                     if not isinstance(item.get(k), (str, int, float, type(None)))
                     or isinstance(item.get(k), bool)]
            if wrong:
                subs.problems.append((where, f"{', '.join(wrong)} must be text"))
                continue
            try:
                credentials = request_credentials(item)
            except CredentialError as e:
                subs.problems.append((where, str(e)))
                continue
            subs.add(FeedSpec(url=item[key].strip(), name=_opt(item.get("name")),
                              topic=_opt(item.get("topic")),
                              language=_opt(item.get("language")),
                              kind="feed" if key == "url" else key, limits=limits,
                              credentials=credentials), where)
        else:
            subs.problems.append((where, "each entry needs a 'url' (a feed), a 'sitemap' "
                                         "or a 'site'"))


SOURCE_KEYS = ("url", "sitemap", "site")
"""Keys naming a source in a YAML entry: a feed, a sitemap (or index), a site's robots.txt."""
LIMIT_KEYS = frozenset({"max_urls", "max_depth", "max_bytes"})


def _limits(item: dict) -> SitemapLimits | None:
    """The sitemap limits an entry sets (None: the defaults); ValueError when bad."""
    given = {k: item[k] for k in LIMIT_KEYS if k in item}
    if not given:
        return None
    low = {"max_urls": 1, "max_depth": 0, "max_bytes": 1024}
    for k, v in given.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < low[k]:
            raise ValueError(f"{k} must be a whole number of at least {low[k]}")
    return SitemapLimits(**given)


def _first_line(error: Exception) -> str:
    """An exception's message on one line, cut short."""
    return (" ".join(str(error).split()) or type(error).__name__)[:300]


def _opt(value: object) -> str | None:
    return None if value is None else str(value).strip() or None


def _from_opml(path: Path, subs: Subscriptions) -> None:
    data = path.read_bytes()
    # listparser returns no feeds and no error for a file that is not XML at all, so
    # the document is checked first (defusedxml: no entity expansion, no DTD fetching).
    try:
        root = SafeET.fromstring(data)
    except Exception as e:  # noqa: BLE001 - ParseError, defusedxml's refusals, bad encodings
        subs.problems.append((str(path), f"not an OPML file: not XML ({_first_line(e)})"))
        return
    tag = root.tag.rsplit("}", 1)[-1].lower() if isinstance(root.tag, str) else ""
    if tag != "opml":
        subs.problems.append((str(path), f"not an OPML file: the root element is <{tag}>"))
        return
    result = listparser.parse(data)
    if result.bozo and not result.feeds:
        subs.problems.append((str(path), f"not a readable OPML file: "
                                         f"{_first_line(result.bozo_exception)}"))
        return
    for i, feed in enumerate(result.feeds):
        subs.add(FeedSpec(url=str(feed.url).strip(), name=_opt(feed.get("title"))),
                 f"{path}#outline[{i}]")


def _from_text(path: Path, subs: Subscriptions) -> None:
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            subs.problems.append((f"{path}:{lineno}", "line is not UTF-8"))
            continue
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            subs.add(FeedSpec(url=line), f"{path}:{lineno}")


def read_sources(sources: Iterable[str]) -> Subscriptions:
    """Expands every ``--feeds`` SOURCE into feed specs (deduplicated by URL).

    Raises SourceError only for a SOURCE that is neither a URL nor a readable file;
    everything else that is wrong ends in ``problems``.
    """
    subs = Subscriptions()
    for source in sources:
        source = source.strip()
        if is_http_url(source):
            subs.add(FeedSpec(url=source), "--feeds")
            continue
        path = Path(source)
        if not path.is_file():
            raise SourceError(f"--feeds {source!r} is neither an http(s) URL nor a readable file")
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            _from_yaml(path, subs)
        elif suffix in (".opml", ".xml"):
            _from_opml(path, subs)
        else:
            _from_text(path, subs)
    return subs
