"""Exact duplicate removal on feed entries: same canonical URL, or same GUID.

Both levels use the same keyed, stateful transform (:class:`KeepFirstPerKey`), so they
partition across workers on a distributed runner and work unchanged in streaming:

* entries of one key are grouped per window and sorted (earliest published first, then
  URL and feed), so the same input always keeps the same entry whatever order the
  runner delivered it in;
* the key remembers its winner for ``ttl`` (event time) and then forgets it, so state
  does not grow without bound in a continuous pipeline.

Dropped entries become :class:`~schemas.DuplicateRecord`\\ s naming the entry kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas import SCHEMA_VERSION, DuplicateRecord, Entry
from transforms.util import NAMESPACE, fires_once

DEFAULT_TTL = dt.timedelta(hours=72)
_FAR_FUTURE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def entry_order(entry: Entry) -> tuple:
    """Sort key deciding which of several equal entries is kept."""
    return (entry.published_at or _FAR_FUTURE, entry.url, entry.feed_url, entry.guid)


def guid_key(entry: Entry) -> str:
    """GUIDs that are URIs are global; others (``1234``) only mean something per feed."""
    guid = entry.guid
    if "://" in guid or guid.startswith(("tag:", "urn:")):
        return guid
    return f"{entry.feed_url} {guid}"


def duplicate_record(entry: Entry, kept_id: str, level: str, similarity: float,
                     detected_at: dt.datetime) -> DuplicateRecord:
    """A lineage record for an entry that was not written."""
    return DuplicateRecord(
        url=entry.url, feed_url=entry.feed_url, article_id=entry.entry_id,
        duplicate_of=kept_id, level=level, similarity=similarity, title=entry.title[:1000],
        detected_at=detected_at, date=detected_at.strftime("%Y-%m-%d"),
        schema_version=SCHEMA_VERSION, source=entry.source or None,
        language=entry.language_hint or None)


class KeepFirstPerKeyFn(beam.DoFn):
    """Stateful, on grouped input: keeps the first entry of a key, reports the others.

    The group holds every entry of the key in this window; the key's state remembers the
    entry kept in earlier windows (a continuous pipeline) until it expires.
    """

    WINNER = ReadModifyWriteStateSpec("winner", StrUtf8Coder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, level: str, ttl: dt.timedelta = DEFAULT_TTL, clock=None):
        self._level = level
        self._ttl = Duration(seconds=ttl.total_seconds())
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.kept = Metrics.counter(NAMESPACE, f"unique_by_{level}")
        self.dropped = Metrics.counter(NAMESPACE, f"duplicates_{level}")

    def process(self, element: tuple[str, Any], window=beam.DoFn.WindowParam,
                winner=beam.DoFn.StateParam(WINNER),
                expire=beam.DoFn.TimerParam(EXPIRE)) -> Iterator[Any]:
        kept_id = winner.read()
        for entry in sorted(element[1], key=entry_order):
            if kept_id is None:
                kept_id = entry.entry_id
                winner.write(kept_id)
                # Forget the key ttl after it was seen (event time), within the window.
                seen = Timestamp.from_utc_datetime(entry.fetched_at)
                expire.set(min(seen + self._ttl, window.max_timestamp()))
                self.kept.inc()
                yield entry
            else:
                self.dropped.inc()
                yield pvalue.TaggedOutput("duplicates", duplicate_record(
                    entry, kept_id, self._level, 1.0, self._clock()))

    @on_timer(EXPIRE)
    def on_expire(self, winner=beam.DoFn.StateParam(WINNER)) -> Iterator[Any]:
        winner.clear()
        return iter(())


class KeepFirstInGroupFn(beam.DoFn):
    """Stateless twin of :class:`KeepFirstPerKeyFn` for groups that fire once per key.

    Under the default trigger (batch, or fixed windows without lateness) a key's group
    arrives exactly once per window, so remembering the winner in keyed state buys
    nothing; and the Python SDK harness sizes every cached state value by walking loaded
    modules (milliseconds per key), which dominated this stage's cost.
    """

    def __init__(self, level: str, clock=None):
        self._level = level
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.kept = Metrics.counter(NAMESPACE, f"unique_by_{level}")
        self.dropped = Metrics.counter(NAMESPACE, f"duplicates_{level}")

    def process(self, element: tuple[str, Any]) -> Iterator[Any]:
        ordered = sorted(element[1], key=entry_order)
        kept = ordered[0]
        self.kept.inc()
        yield kept
        for entry in ordered[1:]:
            self.dropped.inc()
            yield pvalue.TaggedOutput("duplicates", duplicate_record(
                entry, kept.entry_id, self._level, 1.0, self._clock()))


class KeepFirstPerKey(beam.PTransform):
    """Entries → unique entries (main) and DuplicateRecords (``duplicates``) for one key.

    Keyed state (remembering a key's winner until ``ttl``) is used only when the
    windowing can fire a key more than once; otherwise a plain DoFn does the same work.
    """

    def __init__(self, level: str, key_fn: Callable[[Entry], str],
                 ttl: dt.timedelta = DEFAULT_TTL, clock=None):
        super().__init__()
        self._level = level
        self._key_fn = key_fn
        self._ttl = ttl
        self._clock = clock

    def expand(self, entries):
        fn = (KeepFirstInGroupFn(self._level, self._clock) if fires_once(entries.windowing)
              else KeepFirstPerKeyFn(self._level, self._ttl, self._clock))
        return (
            entries
            | f"KeyBy{self._level.title()}" >> beam.Map(lambda e, f=self._key_fn: (f(e), e))
            .with_output_types(tuple[str, Any])
            | f"GroupBy{self._level.title()}" >> beam.GroupByKey()
            | f"KeepFirstBy{self._level.title()}" >> beam.ParDo(fn)
            .with_outputs("duplicates", main="unique")
        )


class DropExactDuplicates(beam.PTransform):
    """Drops entries whose canonical URL or GUID was already seen within ``ttl``."""

    def __init__(self, ttl: dt.timedelta = DEFAULT_TTL, clock=None):
        super().__init__()
        self._ttl = ttl
        self._clock = clock

    def expand(self, entries):
        by_url = entries | "ByUrl" >> KeepFirstPerKey("url", lambda e: e.url, self._ttl,
                                                      self._clock)
        by_guid = by_url.unique | "ByGuid" >> KeepFirstPerKey("guid", guid_key, self._ttl,
                                                               self._clock)
        duplicates = ((by_url.duplicates, by_guid.duplicates)
                      | "MergeEntryDuplicates" >> beam.Flatten())
        return by_guid.unique, duplicates
