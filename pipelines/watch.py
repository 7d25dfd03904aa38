"""``newsbeam watch``: poll feeds forever on one machine, publishing every cycle.

Size: about 230 lines: the poll loop and its signals. One poll cycle (poll, sort,
journal, run, fold) is in :mod:`pipelines.cycle`, which a remembering batch ``ingest``
runs too (:mod:`pipelines.rerun`); the run tail a cycle shares with batch runs is in
:mod:`pipelines.execute`, its options in :mod:`pipelines.options`.

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
   batch pipeline (``pipelines.stages.build``) over the new entries: pages fetched,
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

import datetime as dt
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipelines.cycle import (
    TRANSIENT_PAGE_REASONS,
    CycleInput,
    CycleReport,
    WatchConfig,
    error_from_json,
    error_to_json,
    fold_journal,
    load_retries,
    may_pass,
    poll_all,
    publish_journaled_errors,
    recover,
    run_cycle,
)
from pipelines.execute import EXIT_FAILED, EXIT_NOTHING, LeaseLost, new_run_id
from pipelines.ingest import parse_args
from pipelines.options import ContinuousOptions
from transforms.fetching.politeness import PoliteFetcher
from transforms.sinks.lease import EXIT_BUSY, LeaseBusy, OutputLease, WriterOptions
from transforms.sinks.publish import recover as recover_publish
from transforms.sinks.state import StateStore

__all__ = ["TRANSIENT_PAGE_REASONS", "CycleInput", "CycleReport", "WatchConfig", "WatchReport",
           "error_from_json", "error_to_json", "fold_journal", "load_retries", "main",
           "may_pass", "parse_watch_args", "poll_all", "publish_journaled_errors", "recover",
           "run_cycle", "watch"]


def parse_watch_args(argv: Sequence[str] | None,
                     command: str = "newsbeam watch") -> WatchConfig:
    """Parses the command line of ``newsbeam watch`` (the ingest options plus the
    continuous ones, checked by :func:`pipelines.options.validate` in ``watch`` mode)."""
    ingest, options = parse_args(argv, mode="watch", command=command)
    opts = options.view_as(ContinuousOptions)
    return WatchConfig(ingest=ingest, options=options, poll_interval=opts.poll_interval,
                       cycles=opts.cycles,
                       forget_after=dt.timedelta(days=opts.forget_after_days),
                       backoff=opts.feed_backoff, page_attempts=opts.page_attempts)


@dataclass
class WatchReport:
    """All cycles of one ``watch`` run."""

    cycles: list[CycleReport] = field(default_factory=list)
    recovered: int = 0
    stopped_by_signal: bool = False

    @property
    def balanced(self) -> bool:
        return all(c.balanced for c in self.cycles)

    @property
    def nothing_through(self) -> bool:
        """Every cycle that ran a pipeline wrote errors and nothing else, and no cycle
        found a feed unchanged (see :attr:`pipelines.summary.Summary.nothing_through`)."""
        ran = [c.summary for c in self.cycles if c.summary is not None]
        quiet = any(c.polls.get("not_modified", 0) or c.entries_unchanged
                    for c in self.cycles)
        return bool(ran) and not quiet and all(s.nothing_through for s in ran)

def watch(config: WatchConfig, clock: Callable[[], dt.datetime] | None = None,
          stop: threading.Event | None = None, out=None,
          on_cycle: Callable[[CycleReport], None] | None = None,
          console=None) -> WatchReport:
    """Runs poll cycles until ``config.cycles`` are done or ``stop`` is set.

    ``on_cycle`` is called after each cycle (tests change the served feeds there).
    SIGINT/SIGTERM set ``stop`` when this runs in the main thread; a second signal
    abandons the running cycle. The output folder's writer lease is held throughout
    (:class:`LeaseBusy` if another run holds it past ``--lock-wait``).
    """
    out = out if out is not None else sys.stdout  # looked up now: callers may swap it
    root = config.ingest.output
    writer = config.options.view_as(WriterOptions)
    with OutputLease(root, "watch-" + new_run_id(), wait=writer.lock_wait,
                     lease_seconds=writer.lock_lease, command="newsbeam watch") as lease:
        return _watch(config, clock, stop, out, on_cycle, lease, console)


def _watch(config: WatchConfig, clock: Callable[[], dt.datetime] | None,
           stop: threading.Event | None, out, on_cycle: Callable[[CycleReport], None] | None,
           lease: OutputLease, console=None) -> WatchReport:
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
                                  lease=lease, console=console)
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


def main(argv: Sequence[str] | None = None, console=None,
         command: str = "newsbeam watch") -> int:
    """``newsbeam watch``; returns the exit code: 0 after a clean stop, 1 on an accounting
    mismatch, 3 when every cycle that ran a pipeline wrote only errors, 75 when another
    run holds the output folder, 130 when a second signal abandoned a cycle."""
    config = parse_watch_args(argv, command=command)
    print(f"newsbeam watch: {len(config.ingest.subscriptions.feeds)} feeds every "
          f"{config.poll_interval:g} s into {config.ingest.output} "
          f"(state in {config.ingest.output}/_state; Ctrl-C stops after the current cycle)",
          flush=True)
    try:
        report = watch(config, console=console)
    except (LeaseBusy, LeaseLost) as e:
        print(f"{command}: {e}", file=sys.stderr)
        return EXIT_BUSY
    except KeyboardInterrupt:
        print("abandoned the running cycle; the next start accounts for what it published",
              flush=True)
        return 130
    if not report.balanced:
        return EXIT_FAILED
    return EXIT_NOTHING if report.nothing_through else 0


if __name__ == "__main__":  # ``python -m pipelines.watch ...`` = ``newsbeam watch ...``
    from pipelines.cli import console_main

    sys.argv.insert(1, "watch")
    console_main()
