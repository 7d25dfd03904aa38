"""One poll cycle of ``newsbeam watch`` (:mod:`pipelines.watch`), which a remembering
batch ``newsbeam ingest`` runs too (:mod:`pipelines.rerun`).

A cycle polls every feed that is due with a conditional GET, sorts the entries against
``DIR/_state/seen.json``, writes its journal, runs the batch stages over the new entries
through the run tail of :mod:`pipelines.execute`, and folds what it published into the
state files (:func:`fold_journal`). After a crash, :func:`recover` folds the journals of
interrupted cycles and publishes the feed errors they had journaled
(:func:`publish_journaled_errors`). The module docstring of :mod:`pipelines.watch` tells
the whole story.

Size: about 440 lines, because the journal, the fold and the cycle read each other's
formats.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.execute import execute, local_runner, new_run_id
from pipelines.options import DEFAULT_PAGE_ATTEMPTS
from pipelines.stages import IngestConfig, ReadBackfillFile, Sources, source_problems
from pipelines.summary import Summary, cleanup_staging, run_files
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
from transforms.sinks.lease import OutputLease
from transforms.sinks.parquet import COMPRESSION, date_partition, to_rows
from transforms.sinks.publish import (
    STAGED_SUFFIX,
    committed_files,
    publish_run,
    read_manifest,
    staging_folder,
    write_json,
)
from transforms.sinks.state import StateStore, read_json, write_json_atomic
from transforms.stories.exact import duplicate_record, entry_order

_LOG = logging.getLogger(__name__)

TRANSIENT_PAGE_REASONS = frozenset(
    {"timeout", "connection_error", "robots_unreachable"} | HOST_DOWN_REASONS
    | {f"http_{status}" for status in TRANSIENT_STATUSES})
"""Error reasons of the page stage that may pass by the next cycle."""
RETRIES_FILE = "retries.json"


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
    result: Any = None
    """The cycle's pipeline result (None when no pipeline ran)."""
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
              lease: OutputLease | None = None, console=None, batch: bool = False,
              pipeline_clock: Callable[[], dt.datetime] | None = None,
              pause: Callable[[str], None] | None = None) -> CycleReport:
    """One poll cycle: poll, sort, journal, run the batch pipeline, fold in the outcome.

    ``batch`` (a remembering ``newsbeam ingest``): the cycle keeps the config's run id,
    also reads the config's backfill file, always runs and summarises, and leaves out
    rows an earlier run already published, as a batch run does. ``pipeline_clock`` is the
    pipeline's clock and ``pause`` the publish's fault-injection hook (tests).
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
    cycle_config = dataclasses.replace(config.ingest, run_id=run_id,
                                       subscriptions=Subscriptions(feeds=[]))
    errors = errors + source_problems(Subscriptions(problems=list(problems)), started)
    entry_problems = sum(1 for e in errors if e.level == "entry")
    source: beam.PTransform = CycleInput(new, errors, duplicates)
    if batch and config.ingest.articles:
        # The backfill stage counts its own entries (added to the polled ones below).
        source = Sources({"Cycle": source, "ReadBackfillFile": ReadBackfillFile(
            config.ingest.articles, pipeline_clock)})
    counts = {"entries_unchanged": report.entries_unchanged,
              **{f"feeds_{status}": n for status, n in report.polls.items()}}
    # Each failed cycle publishes its page errors again on purpose (see the docstring of
    # pipelines.watch), so cycles do not skip rows an earlier cycle published; a batch run
    # does, as every batch run does.
    outcome = execute(cycle_config, local_runner(config.options), source,
                      clock=pipeline_clock, lease=lease, pause=pause, skip_published=batch,
                      command="ingest" if batch else "watch", console=console,
                      extra_counts=counts,
                      added_counts={"entries_read": len(new) + len(duplicates)
                                    + entry_problems},
                      feeds=len(config.ingest.subscriptions.feeds) if batch else None)
    report.page_retries = _fold(store, root, run_id, journal, config.forget_after,
                                config.page_attempts)[2]
    report.summary = outcome.summary
    report.result = outcome.result
    report.seconds = time.monotonic() - t0
    return report
