"""Reading subscription lists: feed URLs, OPML files, plain text lists and YAML configs.

``newsbeam ingest --feeds SOURCE`` accepts, for each SOURCE:

* an http(s) URL: one feed;
* an OPML file (``.opml``/``.xml``), parsed with ``listparser``;
* a YAML file (``.yaml``/``.yml``) with a top-level ``feeds:`` list whose items are a URL
  string or a mapping with ``url`` and optional ``name``, ``topic``, ``language``;
* any other file: one URL per line, ``#`` starts a comment.

Sources are read when the pipeline is built (they are small), so a typo fails at once
with a clear message instead of deep inside a running job. Entries that are not valid
http(s) URLs do not stop the run: they are returned as problems and become error records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import listparser
import yaml

from schemas import FeedSpec
from transforms.urls import is_http_url

_LANG = re.compile(r"^[a-z]{2,3}$")


def _media_topics() -> frozenset[str]:
    # Imported late: the topic table lives with the Beam stage that applies it.
    from transforms.topics import MEDIA_TOPICS

    return frozenset(MEDIA_TOPICS)


class SourceError(ValueError):
    """A subscription source that cannot be read at all (missing file, bad YAML)."""


@dataclass
class Subscriptions:
    """Feeds read from all sources, plus the entries that were refused and why."""

    feeds: list[FeedSpec] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (location, message)

    def add(self, spec: FeedSpec, location: str) -> None:
        if not is_http_url(spec.url):
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
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SourceError(f"{path}: invalid YAML: {e}") from e
    items = doc.get("feeds") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise SourceError(f"{path}: expected a top-level 'feeds:' list")
    for i, item in enumerate(items):
        where = f"{path}#feeds[{i}]"
        if isinstance(item, str):
            subs.add(FeedSpec(url=item.strip()), where)
        elif isinstance(item, dict) and isinstance(item.get("url"), str):
            unknown = set(item) - {"url", "name", "topic", "language"}
            if unknown:
                subs.problems.append((where, f"unknown keys {sorted(unknown)}"))
                continue
            subs.add(FeedSpec(url=item["url"].strip(), name=_opt(item.get("name")),
                              topic=_opt(item.get("topic")),
                              language=_opt(item.get("language"))), where)
        else:
            subs.problems.append((where, "each feed needs a 'url'"))


def _opt(value: object) -> str | None:
    return None if value is None else str(value).strip() or None


def _from_opml(path: Path, subs: Subscriptions) -> None:
    result = listparser.parse(path.read_bytes())
    if result.bozo and not result.feeds:
        raise SourceError(f"{path}: not a readable OPML file: {result.bozo_exception}")
    for i, feed in enumerate(result.feeds):
        subs.add(FeedSpec(url=str(feed.url).strip(), name=_opt(feed.get("title"))),
                 f"{path}#outline[{i}]")


def _from_text(path: Path, subs: Subscriptions) -> None:
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            subs.add(FeedSpec(url=line), f"{path}:{lineno}")


def read_sources(sources: Iterable[str]) -> Subscriptions:
    """Expands every ``--feeds`` SOURCE into feed specs (deduplicated by URL)."""
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
