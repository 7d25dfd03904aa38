"""``newsbeam watch``: poll feeds forever on one machine, publishing every cycle.

Size: about 680 lines, because the poll loop, the journal that makes a cycle recoverable
and the folding of a published cycle into the state files read each other's formats (a
remembering batch ``ingest`` runs one such cycle too, see ``pipelines/rerun.py``). The
lines along which it splits are the journal (``fold_journal`` and the error journal) and
the loop; they move to a stage package of their own with the entry-layer redesign.

Run it::

    newsbeam watch --feeds feeds.yaml --output ./out --poll-interval 300
    newsbeam watch --feeds feeds.yaml --output ./out --poll-interval 60 --cycles 10

Why not simply ``ingest --streaming`` locally: Beam's local runner (the FnApiRunner) runs a
streaming pipeline like a batch one and publishes its files only when the pipeline ends,
so a never-ending local pipeline would never show a single article. Instead, each cycle:

1. polls every feed that is due with a conditional GET (``If-None-Match`` /
   ``If-Modified-Since`` from ``DIR/_state/feeds.json``); failing feeds back off
   exponentially and honour ``Retry-After``;
2. sorts the entries against ``DIR/_state/seen.json``: re-listed by the same feed →
   ``unchanged`` (counted, nothing written); already brought by another feed → a
   duplicate record; otherwise new;
3. writes a journal of the cycle (``DIR/_state/journal-<run_id>.json``: the entries, the
   feed states to adopt and the feed errors behind any backoff), then runs the
   batch pipeline (``pipelines.ingest.build``) over the new entries: pages fetched,
   language, topic, dedup, and the Parquet tables published at the end of the cycle;
4. reads back what the cycle published and folds it into the state files; an entry whose
   fate was not published stays unseen and its feed's validators are not kept, so the
   next cycle fetches it again. After a crash the next start does this from the journal,
   and publishes the journaled feed errors the cycle had not published (exactly once), so
   a feed never backs off without an error row saying why.

Feeds are polled through the same :class:`~transforms.fetching.politeness.PoliteFetcher` as the
batch stages: robots.txt, per-host concurrency and spacing, ``Retry-After`` and the
per-host circuit breaker.

A page that failed for a reason that may pass (timeout, connection error, DNS, a refused
or unreachable host, robots.txt unreachable, HTTP 408/425/429/5xx) is tried again in the
next cycles: its error record is published as usual (one per failed cycle, so every
cycle's accounting balances), but the entry stays unseen and its feed is fetched in full,
until it succeeds or has failed in ``--page-attempts`` cycles (default 3); then its last
error stands. A permanent failure (404, refused content type, no body, ...) is final at
once. The count of failed cycles per entry is kept in ``DIR/_state/retries.json``.

A cycle where every feed answers 304 runs no pipeline at all. One progress line is
printed per cycle. The first Ctrl-C (or SIGTERM) lets the running cycle finish and
publish, then stops; a second one abandons it: only ``_``-prefixed staging files remain,
and the journal makes the next start account for whatever was published.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.ingest import (
    IngestConfig,
    LeaseLost,
    build,
    counters,
    local_runner,
    new_run_id,
    parse_args,
)
from pipelines.summary import Summary, cleanup_staging, run_files, summarize
from schemas import ERROR_SCHEMA, DuplicateRecord, Entry, ErrorRecord, FeedSpec
from transforms.feeds.parse import fetch_outcome
from transforms.feeds.polling import (
    DEFAULT_BACKOFF,
    DEFAULT_FORGET_AFTER,
    DEFAULT_MAX_BACKOFF,
    FeedState,
    PollResult,
    classify,
    is_due,
    kept_keys,
    listing_keys,
    poll_outcome,
    poll_request,
)
from transforms.feeds.sitemaps import poll_sitemap
from transforms.feeds.sources import Subscriptions
from transforms.fetching.http import HOST_DOWN_REASONS, TRANSIENT_STATUSES
from transforms.fetching.politeness import PoliteFetcher
from transforms.sinks.lease import EXIT_BUSY, LeaseBusy, OutputLease, WriterOptions
from transforms.sinks.parquet import COMPRESSION, date_partition, to_rows
from transforms.sinks.publish import (
    STAGED_SUFFIX,
    committed_files,
    publish_run,
    read_manifest,
    staging_folder,
    write_json,
)
from transforms.sinks.publish import recover as recover_publish
from transforms.sinks.state import StateStore, read_json, write_json_atomic
from transforms.stories.exact import duplicate_record, entry_order

_LOG = logging.getLogger(__name__)

DEFAULT_PAGE_ATTEMPTS = 3
"""Cycles in which a page that failed transiently is tried before its error stands."""
TRANSIENT_PAGE_REASONS = frozenset(
    {"timeout", "connection_error", "robots_unreachable"} | HOST_DOWN_REASONS
    | {f"http_{status}" for status in TRANSIENT_STATUSES})
"""Error reasons of the page stage that may pass by the next cycle."""
RETRIES_FILE = "retries.json"


class ContinuousOptions(PipelineOptions):
    """Options of the continuous modes (``watch`` and ``ingest --streaming``)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--poll-interval", dest="poll_interval", type=float, default=300.0,
            help="Seconds between the starts of two polls of every feed. Default: 300.")
        parser.add_argument(
            "--cycles", type=int, default=None,
            help="Stop after this many poll cycles (watch mode). Default: run until "
                 "Ctrl-C or SIGTERM.")
        parser.add_argument(
            "--stop-after", dest="stop_after", type=float, default=None,
            help="Streaming pipeline only: stop polling this many seconds after the start "
                 "(a bounded run, e.g. for tests). Default: never.")
        parser.add_argument(
            "--forget-after-days", dest="forget_after_days", type=float,
            default=DEFAULT_FORGET_AFTER.days,
            help="Forget an item this many days after no feed lists it any more. "
                 f"Default: {DEFAULT_FORGET_AFTER.days}.")
        parser.add_argument(
            "--feed-backoff", dest="feed_backoff", type=float, default=DEFAULT_BACKOFF,
            help="Seconds a feed that failed once waits before its next poll; doubles per "
                 f"consecutive failure up to {DEFAULT_MAX_BACKOFF:.0f}. "
                 f"Default: {DEFAULT_BACKOFF:.0f}.")
        parser.add_argument(
            "--page-attempts", dest="page_attempts", type=int, default=DEFAULT_PAGE_ATTEMPTS,
            help="Watch mode: poll cycles in which an article page that failed transiently "
                 "(timeout, connection error, HTTP 429 or 5xx) is fetched before its error "
                 "stands; 1 makes every failure final. "
                 f"Default: {DEFAULT_PAGE_ATTEMPTS}.")


@dataclass
class WatchConfig:
    """Everything the watch loop needs, validated."""

    ingest: IngestConfig
    options: PipelineOptions
    poll_interval: float = 300.0
    cycles: int | None = None
    forget_after: dt.timedelta = DEFAULT_FORGET_AFTER
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    page_attempts: int = DEFAULT_PAGE_ATTEMPTS


def parse_watch_args(argv: Sequence[str] | None) -> WatchConfig:
    """Parses the command line of ``newsbeam watch`` (the ingest options plus the above)."""
    ingest, options = parse_args(argv)
    opts = options.view_as(ContinuousOptions)
    errors = []
    if ingest.articles:
        errors.append("--articles (backfill) is a one-off: use newsbeam ingest for it")
    if not ingest.subscriptions.feeds:
        errors.append("give at least one --feeds SOURCE with a valid feed")
    if opts.poll_interval <= 0:
        errors.append("--poll-interval must be positive")
    if opts.cycles is not None and opts.cycles < 1:
        errors.append("--cycles must be at least 1")
    if opts.page_attempts < 1:
        errors.append("--page-attempts must be at least 1")
    if "://" in ingest.output:
        errors.append("watch keeps its state beside the output: --output must be a local "
                      "folder (use a streaming runner for object stores)")
    if errors:
        raise SystemExit("newsbeam watch: " + "; ".join(errors))
    return WatchConfig(ingest=ingest, options=options, poll_interval=opts.poll_interval,
                       cycles=opts.cycles,
                       forget_after=dt.timedelta(days=opts.forget_after_days),
                       backoff=opts.feed_backoff, page_attempts=opts.page_attempts)


class CycleInput(beam.PTransform):
    """The feed stage of one cycle: entries, errors and duplicates polled by the driver."""

    def __init__(self, entries: list[Entry], errors: list[ErrorRecord],
                 duplicates: list[DuplicateRecord]):
        super().__init__()
        self._entries = entries
        self._errors = errors
        self._duplicates = duplicates

    def expand(self, pbegin):
        return {
            "entries": pbegin | "NewEntries" >> beam.Create(self._entries),
            "errors": pbegin | "PollErrors" >> beam.Create(self._errors),
            "duplicates": pbegin | "EarlierDuplicates" >> beam.Create(self._duplicates),
        }


@dataclass
class CycleReport:
    """What one cycle did; ``line()`` is the progress line."""

    number: int
    run_id: str | None
    started: dt.datetime
    polls: dict[str, int] = field(default_factory=dict)
    entries_new: int = 0
    entries_unchanged: int = 0
    earlier_duplicates: int = 0
    page_retries: int = 0
    summary: Summary | None = None
    seconds: float = 0.0

    @property
    def balanced(self) -> bool:
        return self.summary is None or self.summary.balanced

    def line(self) -> str:
        p = self.polls
        s = self.summary
        wrote = (f"wrote {s.articles} articles, {s.duplicates} duplicates, "
                 f"{s.entry_errors} entry errors, {s.feed_errors} feed errors"
                 if s is not None else "nothing to write")
        check = "" if self.balanced else " [ACCOUNTING MISMATCH]"
        if self.page_retries:
            wrote += f" ({self.page_retries} pages to try again)"
        return (f"cycle {self.number} {self.started:%Y-%m-%dT%H:%M:%SZ}: feeds "
                f"{p.get('fetched', 0)} fetched, {p.get('not_modified', 0)} not modified, "
                f"{p.get('failed', 0)} failed, {p.get('backing_off', 0)} backing off; entries "
                f"{self.entries_new} new, {self.entries_unchanged} unchanged, "
                f"{self.earlier_duplicates} seen elsewhere; {wrote} in {self.seconds:.1f} s"
                f"{check}")


@dataclass
class WatchReport:
    """All cycles of one ``watch`` run."""

    cycles: list[CycleReport] = field(default_factory=list)
    recovered: int = 0
    stopped_by_signal: bool = False

    @property
    def balanced(self) -> bool:
        return all(c.balanced for c in self.cycles)


def _published_fates(root: str, run_id: str | None) -> dict[tuple[str, str], tuple[str, str]]:
    """(feed_url, entry id or url) → (fate, kept article_id), from the run's files (or,
    with ``run_id`` None, from every committed file of the output).

    For an entry-level error the second field is ``stage/reason``.
    """
    fates: dict[tuple[str, str], tuple[str, str]] = {}

    def files(table: str) -> list[str]:
        return run_files(root, table, run_id) if run_id else committed_files(root, table)

    for path in files("articles"):
        t = pq.read_table(path, columns=["article_id", "feed_url"])
        for aid, feed in zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True):
            fates[(feed, aid)] = ("article", aid)
    for path in files("duplicates"):
        t = pq.read_table(path, columns=["article_id", "feed_url", "duplicate_of"])
        for aid, feed, kept in zip(*(t.column(c).to_pylist() for c in t.column_names),
                                   strict=True):
            fates.setdefault((feed, aid), ("duplicate", kept))
    for path in files("errors"):
        t = pq.read_table(path, columns=["url", "feed_url", "level", "stage", "reason"])
        for url, feed, level, stage, reason in zip(
                *(t.column(c).to_pylist() for c in t.column_names), strict=True):
            if level == "entry":
                fates.setdefault((feed, url), ("error", f"{stage}/{reason}"))
    return fates


def may_pass(fate: tuple[str, str]) -> bool:
    """Whether a published fate is a page failure worth trying again next cycle."""
    kind, detail = fate
    stage, _, reason = detail.partition("/")
    return kind == "error" and stage == "fetch_page" and reason in TRANSIENT_PAGE_REASONS


def load_retries(store: StateStore) -> dict[str, dict[str, Any]]:
    """Listing key → ``{"runs": [run ids whose page fetch failed transiently], "at": t}``."""
    return read_json(store.dir / RETRIES_FILE, {})


def fold_journal(store: StateStore, root: str, run_id: str, journal: dict[str, Any],
                 forget_after: dt.timedelta,
                 page_attempts: int = DEFAULT_PAGE_ATTEMPTS) -> tuple[int, int]:
    """Folds a cycle's published outcome into the state files; returns (seen, unaccounted).

    Only entries whose fate (article, duplicate or entry error) was published become
    seen. A feed with an unaccounted entry keeps no validators, so its next poll is a
    full GET that lists the entry again. So does a feed with an entry whose page failed
    transiently in fewer than ``page_attempts`` cycles: that entry stays unseen (it
    counts as accounted: its error record was published).

    A journal marked ``skip_published`` (a batch run, whose rows already published by an
    earlier run were left out) also finds fates among every committed file.
    """
    return _fold(store, root, run_id, journal, forget_after, page_attempts)[:2]


def _fold(store: StateStore, root: str, run_id: str, journal: dict[str, Any],
          forget_after: dt.timedelta, page_attempts: int) -> tuple[int, int, int]:
    """:func:`fold_journal`, also returning how many entries will be tried again."""
    feeds = store.load_feeds()
    seen = store.load_seen()
    retries = load_retries(store)
    now = journal["polled_at"]
    fates = _published_fates(root, run_id) if journal["entries"] else {}
    if journal.get("skip_published") and any(
            (f, e) not in fates and (f, u) not in fates for f, e, u, *_ in journal["entries"]):
        for key, fate in _published_fates(root, None).items():
            fates.setdefault(key, fate)
    incomplete: set[str] = set()
    accounted = again = 0
    for feed, entry_id, url, guid, gkey in journal["entries"]:
        fate = fates.get((feed, entry_id)) or fates.get((feed, url))
        if fate is None:
            incomplete.add(feed)
            continue
        accounted += 1
        key = f"{feed} u {entry_id}"
        if may_pass(fate):
            record = retries.setdefault(key, {"runs": [], "at": now})
            if run_id not in record["runs"]:  # folding a journal twice counts once
                record["runs"].append(run_id)
            record["at"] = now
            if len(record["runs"]) < page_attempts:
                incomplete.add(feed)
                again += 1
                continue
        retries.pop(key, None)
        seen.mark_listed([key, f"{feed} g {guid}"], now)
        if fate[0] != "error":
            seen.keep([f"u {url}", f"g {gkey}"], fate[1], now)
    seen.mark_listed(journal.get("touched", []), now)
    for url, state in journal["feeds"].items():
        if url in incomplete:
            state = dict(state, etag=None, last_modified=None)
        feeds[url] = state
    cutoff = now - forget_after.total_seconds()
    seen.forget_before(cutoff, {u: s.get("last_listing_at", 0.0) for u, s in feeds.items()})
    retries = {k: v for k, v in retries.items() if v["at"] >= cutoff}
    # Retries first: a crash before the other files are saved folds the journal again,
    # and a run id already counted is not counted twice.
    write_json_atomic(store.dir / RETRIES_FILE, retries)
    store.save(feeds, seen)
    store.drop_journal(run_id)
    return accounted, len(journal["entries"]) - accounted, again


def error_to_json(error: ErrorRecord) -> dict[str, Any]:
    """An error record as journal JSON (times as ISO 8601)."""
    obj = dataclasses.asdict(error)
    obj["occurred_at"] = error.occurred_at.isoformat()
    return obj


def error_from_json(obj: dict[str, Any]) -> ErrorRecord:
    """The inverse of :func:`error_to_json`."""
    return ErrorRecord(**dict(obj, occurred_at=dt.datetime.fromisoformat(obj["occurred_at"])))


def publish_journaled_errors(root: str, run_id: str, journal: dict[str, Any]) -> int:
    """Publishes the feed errors a journal names that its run did not; returns how many.

    A cycle journals its feed failures with the feed states that make those feeds back
    off. If the cycle dies before its pipeline publishes the errors table, the next start
    adopts the backoff from the journal, so it must also write the error rows, or no row
    would ever say why the feed is skipped. Rows the run did publish are matched one for
    one (url, feed, level, stage, reason). The missing rows are published as a run of
    their own (``<run_id>-feed-errors``) with its own commit manifest, so readers see them
    like any run's rows and running this again writes nothing twice.
    """
    journaled = [error_from_json(obj) for obj in journal.get("feed_errors", [])]
    recovered_id = f"{run_id}-feed-errors"
    if not journaled or read_manifest(root, recovered_id) is not None:
        return 0
    published: collections.Counter = collections.Counter()
    for path in run_files(root, "errors", run_id):
        t = pq.read_table(path, columns=["url", "feed_url", "level", "stage", "reason"])
        published.update(zip(*(t.column(c).to_pylist() for c in t.column_names),
                             strict=True))
    missing: dict[str, list[ErrorRecord]] = collections.defaultdict(list)
    for error in journaled:
        key = (error.url, error.feed_url, error.level, error.stage, error.reason)
        if published[key] > 0:
            published[key] -= 1
        else:
            missing[date_partition(error)].append(error)
    if not missing:
        return 0
    staging = Path(staging_folder(root, recovered_id))
    staging.mkdir(parents=True, exist_ok=True)
    files = []
    for seq, (partition, rows) in enumerate(sorted(missing.items())):
        staged = staging / f"recovered-{seq:05d}.parquet"
        pq.write_table(to_rows(rows, ERROR_SCHEMA), staged, compression=COMPRESSION)
        files.append({"partition": partition, "path": str(staged), "rows": len(rows)})
    write_json(str(staging / f"errors-recovered{STAGED_SUFFIX}"),
               {"table": "errors", "window": "recovered", "files": files})
    publish_run(root, recovered_id, skip_published=False)
    return sum(len(rows) for rows in missing.values())


def recover(store: StateStore, root: str, forget_after: dt.timedelta,
            page_attempts: int = DEFAULT_PAGE_ATTEMPTS) -> int:
    """Folds in the journals of cycles interrupted earlier; returns how many."""
    journals = store.journals()
    for run_id, journal in journals:
        written = publish_journaled_errors(root, run_id, journal)
        if written:
            _LOG.warning("interrupted cycle %s: published its %d feed error(s)", run_id,
                         written)
        accounted, lost = fold_journal(store, root, run_id, journal, forget_after,
                                       page_attempts)
        cleanup_staging(root, run_id)
        _LOG.warning("recovered interrupted cycle %s: %d entries published, %d to fetch again",
                     run_id, accounted, lost)
    return len(journals)


def poll_all(fetcher: PoliteFetcher, config: WatchConfig, states: dict[str, dict],
             now: dt.datetime) -> list[PollResult]:
    """Polls every feed that is due; results in subscription order.

    Every GET is queued on ``fetcher`` at once, so feeds are fetched in parallel under
    the same robots.txt, per-host limits and circuit breaker as the batch stages; each
    response is parsed here as it is handed back.
    """
    results: list[PollResult | None] = []
    waiting: list[tuple[int, FeedSpec, FeedState, Future]] = []
    sitemaps: list[tuple[int, FeedSpec, FeedState]] = []
    for spec in config.ingest.subscriptions.feeds:
        state = FeedState.from_json(states.get(spec.url))
        if not is_due(state, now.timestamp()):
            results.append(PollResult(spec, "backing_off", state))
            continue
        if spec.kind != "feed":
            sitemaps.append((len(results), spec, state))
            results.append(None)
            continue
        future = fetcher.submit(spec.url, **poll_request(state, spec))
        waiting.append((len(results), spec, state, future))
        results.append(None)
    for index, spec, state, future in waiting:
        response, error = fetch_outcome(future)
        results[index] = poll_outcome(spec, state, now, response, error, config.backoff,
                                      config.max_backoff)
    for index, spec, state in sitemaps:
        # A sitemap source reads its documents one after another (an index names the
        # next ones); the fetcher still spaces and limits them per host.
        results[index] = poll_sitemap(fetcher, spec, state, now, config.backoff,
                                      config.max_backoff)
    return [r for r in results if r is not None]


def run_cycle(number: int, config: WatchConfig, store: StateStore, fetcher: PoliteFetcher,
              clock: Callable[[], dt.datetime], first: bool,
              lease: OutputLease | None = None, batch: bool = False,
              pipeline_clock: Callable[[], dt.datetime] | None = None,
              pause: Callable[[str], None] | None = None) -> CycleReport:
    """One poll cycle: poll, sort, journal, run the batch pipeline, fold in the outcome.

    ``batch`` (a remembering ``newsbeam ingest``): the cycle also reads the config's
    backfill file, always runs and summarises, and leaves out rows an earlier run
    already published, as a batch run does. ``pipeline_clock`` is the pipeline's clock
    and ``pause`` the publish's fault-injection hook (tests).
    """
    started = clock()
    t0 = time.monotonic()
    report = CycleReport(number, None, started)
    root = config.ingest.output
    seen = store.load_seen()
    results = poll_all(fetcher, config, store.load_feeds(), started)
    entries = sorted((e for r in results for e in r.entries), key=entry_order)
    errors = [err for r in results for err in r.errors]
    for r in results:
        report.polls[r.status] = report.polls.get(r.status, 0) + 1
    new: list[Entry] = []
    duplicates: list[DuplicateRecord] = []
    touched: list[str] = []
    carried: list[Entry] = []  # entries whose fate this cycle must publish
    for entry in entries:
        sighting = classify(entry, seen.listed, seen.kept)
        if sighting.verdict == "unchanged":
            report.entries_unchanged += 1
            touched.extend(listing_keys(entry))
        elif sighting.verdict == "duplicate":
            duplicates.append(duplicate_record(entry, sighting.kept_id or "",
                                               sighting.level or "url", 1.0, started))
            carried.append(entry)
            report.earlier_duplicates += 1
        else:
            new.append(entry)
            carried.append(entry)
    report.entries_new = len(new)
    problems = config.ingest.subscriptions.problems if first else []
    run_id = config.ingest.run_id if batch else new_run_id()
    journal = {
        "polled_at": started.timestamp(),
        "feeds": {r.spec.url: r.state.to_json() for r in results},
        "entries": [[e.feed_url, e.entry_id, e.url, e.guid, kept_keys(e)[1][2:]]
                    for e in carried],
        "touched": touched,
        # Feed failures travel with the backoff they cause: recovery publishes them if
        # the pipeline did not (see publish_journaled_errors).
        "feed_errors": [error_to_json(e) for e in errors if e.level == "feed"],
        "skip_published": batch,
    }
    if not new and not duplicates and not errors and not problems and not batch:
        # Nothing to publish (every feed answered 304, or listed only known items).
        fold_journal(store, root, run_id, journal, config.forget_after, config.page_attempts)
        report.seconds = time.monotonic() - t0
        return report
    report.run_id = run_id
    store.write_journal(run_id, journal)
    cycle_config = dataclasses.replace(
        config.ingest, run_id=run_id,
        subscriptions=Subscriptions(feeds=[], problems=list(problems)))
    pipeline = beam.Pipeline(options=local_runner(config.options))
    build(pipeline, cycle_config, pipeline_clock,
          feed_stage=CycleInput(new, errors, duplicates), launcher_publishes=True)
    result = pipeline.run()
    result.wait_until_finish()
    if pause:
        pause("before_publish")
    if lease is not None and lease.lost.is_set():
        raise LeaseLost(f"{root}: watch lost its writer lease (heartbeat stopped for longer "
                        "than --lock-lease); cycle not published, the next start recovers it")
    # Each failed cycle publishes its page errors again on purpose (see the module
    # docstring), so cycles do not skip rows an earlier cycle published; a batch run
    # does, as every batch run does.
    manifest = publish_run(root, run_id, skip_published=batch, pause=pause)
    cleanup_staging(root, run_id)
    report.page_retries = _fold(store, root, run_id, journal, config.forget_after,
                                config.page_attempts)[2]
    entry_problems = sum(1 for e in errors if e.level == "entry")
    counts = counters(result)
    # The backfill stage counts its own entries; the polled ones are counted here.
    counts["entries_read"] = (counts.get("entries_read", 0) + len(new) + len(duplicates)
                              + entry_problems)
    counts["entries_unchanged"] = report.entries_unchanged
    for status, n in report.polls.items():
        counts[f"feeds_{status}"] = n
    for table in ("articles", "duplicates", "errors"):
        counts[f"rows_written_{table}"] = manifest.rows(table)
    report.summary = summarize(root, run_id, counts)
    report.seconds = time.monotonic() - t0
    return report


def watch(config: WatchConfig, clock: Callable[[], dt.datetime] | None = None,
          stop: threading.Event | None = None, out=sys.stdout,
          on_cycle: Callable[[CycleReport], None] | None = None) -> WatchReport:
    """Runs poll cycles until ``config.cycles`` are done or ``stop`` is set.

    ``on_cycle`` is called after each cycle (tests change the served feeds there).
    SIGINT/SIGTERM set ``stop`` when this runs in the main thread; a second signal
    abandons the running cycle. The output folder's writer lease is held throughout
    (:class:`LeaseBusy` if another run holds it past ``--lock-wait``).
    """
    root = config.ingest.output
    writer = config.options.view_as(WriterOptions)
    with OutputLease(root, "watch-" + new_run_id(), wait=writer.lock_wait,
                     lease_seconds=writer.lock_lease, command="newsbeam watch") as lease:
        return _watch(config, clock, stop, out, on_cycle, lease)


def _watch(config: WatchConfig, clock: Callable[[], dt.datetime] | None,
           stop: threading.Event | None, out, on_cycle: Callable[[CycleReport], None] | None,
           lease: OutputLease) -> WatchReport:
    clock = clock or (lambda: dt.datetime.now(dt.UTC))
    stop = stop or threading.Event()
    root = config.ingest.output
    store = StateStore(root)
    report = WatchReport()
    from pipelines.compact import recover as recover_compaction

    recover_compaction(root)  # a compaction killed half-way may hold a partition
    published = recover_publish(root)
    if published:
        print(f"{root}: {published.render()}", file=out, flush=True)
    report.recovered = recover(store, root, config.forget_after, config.page_attempts)
    if report.recovered:
        print(f"recovered {report.recovered} interrupted cycle(s) from {store.dir}",
              file=out, flush=True)

    abandoned = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            abandoned.set()
            raise KeyboardInterrupt
        stop.set()
        report.stopped_by_signal = True
        print(f"{signal.Signals(signum).name}: stopping after the current cycle "
              "(send it again to abandon the cycle)", file=out, flush=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    fetcher = PoliteFetcher(config.ingest.policy, threads=config.ingest.fetch_threads,
                            name="poll-feed")
    try:
        number = 0
        while not stop.is_set():
            number += 1
            t0 = time.monotonic()
            try:
                cycle = run_cycle(number, config, store, fetcher, clock, first=number == 1,
                                  lease=lease)
            except Exception as e:
                # Libraries may wrap the KeyboardInterrupt of an abandon request in their
                # own errors (langdetect does while loading profiles): still an abandon.
                if abandoned.is_set():
                    raise KeyboardInterrupt from e
                raise
            report.cycles.append(cycle)
            print(cycle.line(), file=out, flush=True)
            if on_cycle is not None:
                on_cycle(cycle)
            if config.cycles is not None and number >= config.cycles:
                break
            stop.wait(max(0.0, config.poll_interval - (time.monotonic() - t0)))
    finally:
        fetcher.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``newsbeam watch``; exit code 0 after a clean stop, 1 on an accounting mismatch."""
    config = parse_watch_args(argv)
    print(f"newsbeam watch: {len(config.ingest.subscriptions.feeds)} feeds every "
          f"{config.poll_interval:g} s into {config.ingest.output} "
          f"(state in {config.ingest.output}/_state; Ctrl-C stops after the current cycle)",
          flush=True)
    try:
        report = watch(config)
    except (LeaseBusy, LeaseLost) as e:
        print(f"newsbeam watch: {e}", file=sys.stderr)
        return EXIT_BUSY
    except KeyboardInterrupt:
        print("abandoned the running cycle; the next start accounts for what it published",
              flush=True)
        return 130
    return 0 if report.balanced else 1


if __name__ == "__main__":
    raise SystemExit(main())
