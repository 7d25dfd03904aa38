"""Polling feeds again and again: conditional GET, backoff, and "have we seen this?".

A continuous run fetches the same feeds every few minutes. Three things keep that cheap
and correct, and they are the same whether the loop is the local ``newsbeam watch``
driver or a streaming pipeline's stateful DoFns:

* **Validators.** The ``ETag`` and ``Last-Modified`` of a feed's last 200 are sent back as
  ``If-None-Match`` / ``If-Modified-Since``; a ``304`` costs no body and no parse.
* **Backoff.** A failing feed is not polled again until ``retry_at``: exponential in the
  number of consecutive failures (capped), and never before the server's ``Retry-After``.
* **Sightings.** A feed lists an item for days. An entry this feed listed before is
  *unchanged* (not a new entry, not a duplicate); an entry another feed already brought is
  a *duplicate* of the article kept then; anything else is *new*.

The pure functions here do all of that; :class:`PollFeedFn` and :class:`FirstSightingFn`
are the keyed, stateful DoFns that apply them in a streaming pipeline
(see ``pipelines/streaming.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from schemas import Entry, ErrorRecord, FeedSpec
from transforms.feeds.parse import feed_request, parse_feed
from transforms.fetching.http import FetchError, FetchPolicy, Response
from transforms.fetching.politeness import PoliteFetcher
from transforms.stories.exact import duplicate_record, guid_key
from transforms.util import NAMESPACE, error_record

DEFAULT_BACKOFF = 60.0
"""Seconds before a feed that failed once is polled again (doubles per failure)."""
DEFAULT_MAX_BACKOFF = 6 * 3600.0
"""Longest wait between polls of a failing feed."""
DEFAULT_FORGET_AFTER = dt.timedelta(days=30)
"""How long an entry no feed lists any more is remembered."""


@dataclass(frozen=True)
class FeedState:
    """What is remembered about one feed between polls. Times are POSIX seconds."""

    etag: str | None = None
    last_modified: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    last_status: str = ""
    last_polled_at: float = 0.0
    last_listing_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> FeedState:
        if not obj:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass
class PollResult:
    """One poll of one feed: ``status`` is fetched, not_modified, failed or backing_off."""

    spec: FeedSpec
    status: str
    state: FeedState
    entries: list[Entry] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)


def conditional_headers(state: FeedState) -> dict[str, str]:
    """``If-None-Match`` / ``If-Modified-Since`` from the validators of the last 200."""
    headers = {}
    if state.etag:
        headers["If-None-Match"] = state.etag
    if state.last_modified:
        headers["If-Modified-Since"] = state.last_modified
    return headers


def backoff_seconds(failures: int, base: float = DEFAULT_BACKOFF,
                    cap: float = DEFAULT_MAX_BACKOFF) -> float:
    """Wait after ``failures`` consecutive failures: base, 2·base, 4·base, … up to cap."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** min(failures - 1, 30))


def is_due(state: FeedState, now: float) -> bool:
    """True unless the feed is backing off after failures or a ``Retry-After``."""
    return now >= state.retry_at


def after_response(state: FeedState, status: int, headers: Mapping[str, str],
                   now: float) -> FeedState:
    """State after a 200 (new validators) or a 304 (validators kept, refreshed if sent)."""
    etag = headers.get("etag") or (state.etag if status == 304 else None)
    modified = headers.get("last-modified") or (state.last_modified if status == 304 else None)
    return dataclasses.replace(
        state, etag=etag, last_modified=modified, failures=0, retry_at=0.0,
        last_status="not_modified" if status == 304 else "fetched", last_polled_at=now,
        last_listing_at=state.last_listing_at if status == 304 else now)


def after_failure(state: FeedState, retry_after: float | None, now: float,
                  base: float = DEFAULT_BACKOFF, cap: float = DEFAULT_MAX_BACKOFF) -> FeedState:
    """State after a failed poll: validators kept, next poll pushed back."""
    failures = state.failures + 1
    wait = max(backoff_seconds(failures, base, cap), retry_after or 0.0)
    return dataclasses.replace(state, failures=failures, retry_at=now + wait,
                               last_status="failed", last_polled_at=now)


def poll_request(state: FeedState, spec: FeedSpec | None = None) -> dict[str, Any]:
    """The GET arguments of one poll: the batch feed request, made conditional."""
    return feed_request(conditional_headers(state), spec)


def poll_feed(fetcher: PoliteFetcher, spec: FeedSpec, state: FeedState, now: dt.datetime,
              base: float = DEFAULT_BACKOFF, cap: float = DEFAULT_MAX_BACKOFF) -> PollResult:
    """Polls one feed if it is due: conditional GET, parse, and the feed's next state.

    The GET goes through ``fetcher`` (robots.txt, per-host limits, circuit breaker),
    like every other fetch; this call waits for it.
    """
    if not is_due(state, now.timestamp()):
        return PollResult(spec, "backing_off", state)
    if spec.kind != "feed":
        from transforms.feeds.sitemaps import poll_sitemap  # it builds on this module

        return poll_sitemap(fetcher, spec, state, now, base, cap)
    try:
        response = fetcher.fetch(spec.url, **poll_request(state, spec))
    except FetchError as e:
        return poll_outcome(spec, state, now, None, e, base, cap)
    return poll_outcome(spec, state, now, response, None, base, cap)


def poll_outcome(spec: FeedSpec, state: FeedState, now: dt.datetime, response: Response | None,
                 error: FetchError | None, base: float = DEFAULT_BACKOFF,
                 cap: float = DEFAULT_MAX_BACKOFF) -> PollResult:
    """What one poll's response (or failure) means: entries, errors and the next state.

    Failures map to the same error records as in the batch feed stage.
    """
    t = now.timestamp()
    if error is not None:
        return PollResult(spec, "failed", after_failure(state, error.retry_after, t, base, cap),
                          errors=[error_record(error.url, spec.url, "feed", "fetch_feed",
                                               error.reason, error.message, error.status,
                                               error.attempts, now, spec.name,
                                               spec.language)])
    assert response is not None
    if response.status == 304:
        return PollResult(spec, "not_modified",
                          after_response(state, 304, response.headers, t))
    parsed = parse_feed(response.body, response.headers, spec, now, location=response.url)
    if not parsed.entries and parsed.bozo:
        # Keep the old validators: the next poll must fetch the (hopefully fixed) feed.
        return PollResult(spec, "failed", after_failure(state, None, t, base, cap), errors=[
            error_record(spec.url, spec.url, "feed", "parse_feed", parsed.reason,
                         f"feed could not be parsed: {parsed.bozo}", response.status,
                         response.attempts, now, spec.name, spec.language)])
    problems = [error_record(url, spec.url, "entry", "parse_feed", reason, message, None, 1, now,
                             spec.name, spec.language)
                for url, reason, message in parsed.problems]
    return PollResult(spec, "fetched", after_response(state, response.status, response.headers,
                                                      t),
                      entries=parsed.entries, errors=problems)


# -- sightings ------------------------------------------------------------------------------


def listing_keys(entry: Entry) -> tuple[str, str]:
    """Keys meaning "this feed listed this item": by article id and by GUID."""
    return f"{entry.feed_url} u {entry.entry_id}", f"{entry.feed_url} g {entry.guid}"


def kept_keys(entry: Entry) -> tuple[str, str]:
    """Keys meaning "some feed brought this item": by canonical URL and by GUID."""
    return f"u {entry.url}", f"g {guid_key(entry)}"


@dataclass(frozen=True)
class Sighting:
    """What an entry is, given what was seen before: new, unchanged or duplicate."""

    verdict: str
    kept_id: str | None = None
    level: str | None = None


def classify(entry: Entry, listed: Mapping[str, Any], kept: Mapping[str, Any]) -> Sighting:
    """Classifies an entry against earlier sightings (``kept`` values: [article_id, seen])."""
    if any(k in listed for k in listing_keys(entry)):
        return Sighting("unchanged")
    by_url, by_guid = kept_keys(entry)
    for key, level in ((by_url, "url"), (by_guid, "guid")):
        if key in kept:
            return Sighting("duplicate", kept[key][0], level)
    return Sighting("new")


# -- streaming DoFns ------------------------------------------------------------------------


class PollFeedFn(beam.DoFn):
    """Keyed by feed URL: polls the feed on each impulse with its remembered state.

    Input ``(feed_url, FeedSpec)`` once per impulse. The poll time is the element's
    timestamp (the impulse's), not the wall clock, so backoff is decided in event time and
    a test can drive it with ``TestStream``. Entries go to the main output stamped with
    the poll time; errors are tagged ``errors``. Feeds are fetched by a
    :class:`~transforms.fetching.politeness.PoliteFetcher`, as in the batch feed stage: robots.txt,
    the per-host limits shared with the page stage, ``Retry-After`` and the breaker.
    """

    FEED = ReadModifyWriteStateSpec("feed_state", PickleCoder())

    def __init__(self, policy: FetchPolicy, base: float = DEFAULT_BACKOFF,
                 cap: float = DEFAULT_MAX_BACKOFF, resolver=None):
        self._policy = policy
        self._base = base
        self._cap = cap
        self._resolver = resolver
        self._fetcher: PoliteFetcher | None = None
        self.polled = Metrics.counter(NAMESPACE, "feeds_fetched")
        self.not_modified = Metrics.counter(NAMESPACE, "feeds_not_modified")
        self.failed = Metrics.counter(NAMESPACE, "feeds_failed")
        self.backing_off = Metrics.counter(NAMESPACE, "feeds_backing_off")

    def setup(self) -> None:
        # One request at a time per instance: the host limits it shares with the page
        # stage of this process are what spread the polls out.
        self._fetcher = PoliteFetcher(self._policy, threads=2, resolver=self._resolver,
                                      name="poll-feed")

    def teardown(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()

    def process(self, element: tuple[str, FeedSpec], timestamp=beam.DoFn.TimestampParam,
                feed_state=beam.DoFn.StateParam(FEED)) -> Iterator[Any]:
        assert self._fetcher is not None
        _, spec = element
        state = feed_state.read() or FeedState()
        now = Timestamp.of(timestamp).to_utc_datetime(has_tz=True)
        result = poll_feed(self._fetcher, spec, state, now, self._base, self._cap)
        feed_state.write(result.state)
        {"fetched": self.polled, "not_modified": self.not_modified, "failed": self.failed,
         "backing_off": self.backing_off}[result.status].inc()
        for error in result.errors:
            yield pvalue.TaggedOutput("errors", error)
        yield from result.entries


@dataclass(frozen=True)
class KeyRecord:
    """State of one item key in a streaming pipeline: who kept it, which feeds listed it."""

    kept_id: str
    feeds: frozenset[str]
    last_seen: float


def sight(record: KeyRecord | None, entry: Entry, now: float) -> tuple[Sighting, KeyRecord]:
    """Classifies ``entry`` against one key's record and returns the updated record."""
    if record is None:
        return Sighting("new"), KeyRecord(entry.entry_id, frozenset({entry.feed_url}), now)
    updated = KeyRecord(record.kept_id, record.feeds | {entry.feed_url}, now)
    if entry.feed_url in record.feeds:
        return Sighting("unchanged"), updated
    return Sighting("duplicate", record.kept_id), updated


class FirstSightingFn(beam.DoFn):
    """Keyed by an item key (URL or GUID), in the global window: passes first sightings.

    A re-listing by the same feed is dropped and counted as ``entries_unchanged``; another
    feed's copy becomes a DuplicateRecord (tagged ``duplicates``). The key is forgotten
    ``forget_after`` (event time) after it was last listed: the timer is pushed back on
    every sighting, so an item still listed is never forgotten.
    """

    RECORD = ReadModifyWriteStateSpec("record", PickleCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, level: str, forget_after: dt.timedelta = DEFAULT_FORGET_AFTER,
                 clock=None):
        self._level = level
        self._forget_after = forget_after.total_seconds()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.unchanged = Metrics.counter(NAMESPACE, "entries_unchanged")
        self.dropped = Metrics.counter(NAMESPACE, f"duplicates_{level}_earlier")

    def process(self, element: tuple[str, Entry], timestamp=beam.DoFn.TimestampParam,
                record=beam.DoFn.StateParam(RECORD),
                forget=beam.DoFn.TimerParam(FORGET)) -> Iterator[Any]:
        entry = element[1]
        now = float(Timestamp.of(timestamp).micros) / 1e6
        sighting, updated = sight(record.read(), entry, now)
        record.write(updated)
        forget.set(Timestamp.of(now + self._forget_after))
        if sighting.verdict == "new":
            yield entry
        elif sighting.verdict == "unchanged":
            self.unchanged.inc()
        else:
            self.dropped.inc()
            yield pvalue.TaggedOutput("duplicates", duplicate_record(
                entry, sighting.kept_id or "", self._level, 1.0, self._clock()))

    @on_timer(FORGET)
    def on_forget(self, record=beam.DoFn.StateParam(RECORD)) -> Iterator[Any]:
        record.clear()
        return iter(())


class DropEarlierSightings(beam.PTransform):
    """Entries (global window) → first sightings (main) and DuplicateRecords (duplicates)."""

    def __init__(self, forget_after: dt.timedelta = DEFAULT_FORGET_AFTER, clock=None):
        super().__init__()
        self._forget_after = forget_after
        self._clock = clock

    def expand(self, entries):
        by_url = (
            entries
            | "KeyByUrl" >> beam.Map(lambda e: (e.url, e)).with_output_types(tuple[str, Any])
            | "FirstByUrl" >> beam.ParDo(FirstSightingFn("url", self._forget_after, self._clock))
            .with_outputs("duplicates", main="entries"))
        by_guid = (
            by_url.entries
            | "KeyByGuid" >> beam.Map(lambda e: (guid_key(e), e))
            .with_output_types(tuple[str, Any])
            | "FirstByGuid" >> beam.ParDo(
                FirstSightingFn("guid", self._forget_after, self._clock))
            .with_outputs("duplicates", main="entries"))
        duplicates = ((by_url.duplicates, by_guid.duplicates)
                      | "MergeEarlierDuplicates" >> beam.Flatten())
        return by_guid.entries, duplicates
