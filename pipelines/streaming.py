"""The unbounded ingestion pipeline, for streaming runners (Dataflow, Flink, Prism).

Run it::

    newsbeam ingest --feeds feeds.yaml --output gs://BUCKET/news --streaming \\
        --poll-interval 300 --runner DataflowRunner --project P --region R \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py

Shape of the pipeline::

    PeriodicImpulse(every poll interval)
      → one (feed URL, FeedSpec) per feed per impulse
      → PollFeed         stateful, keyed by feed URL: ETag/Last-Modified, backoff, Retry-After
      → FirstSighting    stateful, keyed by URL then GUID: drops re-listings, reports items
                         another feed brought earlier; forgets keys no feed lists any more
      → FixedWindows(poll interval)
      → the batch stages from ``pipelines.ingest.build``: exact dedup, pages, language,
        topic, stories, and Parquet tables published once per window
        (``part-<run_id>-<window start>-<window end>-NNNNN.parquet``)

The story stage runs with ``across_windows``: its keyed steps (article id, content hash,
blocking keys, pointer jumping) keep state in the global window, so a same-body copy, a
near copy or an echo is matched to an original that came in an earlier window. That state
expires the story window (``--story-window-hours``, 72 by default) after the article's
published time, in watermark time; a copy arriving later opens a story of its own.

Decisions are taken in event time: a poll's time is its impulse's timestamp, so backoff
and forgetting are deterministic under ``TestStream``.

Locally, ``--streaming`` without a streaming runner runs :mod:`pipelines.watch` instead,
because Beam's in-process runner (the FnApiRunner) publishes a streaming pipeline's files
only when it ends. Give ``--stop-after SECONDS`` to run this pipeline locally anyway as a
bounded test run. ``--runner PrismRunner`` (Beam's portable local runner, built by
``deploy/local-runners.sh``) is a streaming runner: it publishes every window as it closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import sys
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP

from pipelines.ingest import IngestConfig, build, counters
from pipelines.runners import is_prism, prism_for_run
from pipelines.watch import ContinuousOptions, WatchConfig, watch
from schemas import FeedSpec
from transforms.feeds.polling import (
    DEFAULT_BACKOFF,
    DEFAULT_FORGET_AFTER,
    DEFAULT_MAX_BACKOFF,
    DropEarlierSightings,
    PollFeedFn,
)
from transforms.feeds.sources import Subscriptions
from transforms.fetching.http import FetchPolicy
from transforms.util import NAMESPACE

_LOG = logging.getLogger(__name__)
LOCAL_RUNNERS = frozenset({None, "", "directrunner", "direct", "fnapirunner",
                           "bundlebaseddirectrunner", "switchingdirectrunner"})


class _CountEntriesFn(beam.DoFn):
    """Counts entries that reach a fate (new, duplicate, rejected); re-listings do not."""

    def __init__(self):
        self.read = Metrics.counter(NAMESPACE, "entries_read")

    def process(self, element: Any):
        self.read.inc()
        yield element


class PollContinuously(beam.PTransform):
    """Impulses → windowed ``{"entries", "errors", "duplicates"}`` for ``build``'s feed stage.

    ``impulse`` replaces the PeriodicImpulse (tests pass a ``TestStream`` of timestamps).
    """

    def __init__(self, feeds: list[FeedSpec], policy: FetchPolicy, poll_interval: float,
                 start: float | None = None, stop: float | None = None,
                 forget_after: dt.timedelta = DEFAULT_FORGET_AFTER,
                 backoff: float = DEFAULT_BACKOFF, max_backoff: float = DEFAULT_MAX_BACKOFF,
                 impulse: beam.PTransform | None = None, clock=None):
        super().__init__()
        self._feeds = list(feeds)
        self._policy = policy
        self._interval = poll_interval
        self._start = start
        self._stop = stop
        self._forget_after = forget_after
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._impulse = impulse
        self._clock = clock

    def expand(self, pbegin):
        impulse = self._impulse or PeriodicImpulse(
            start_timestamp=self._start if self._start is not None else time.time(),
            stop_timestamp=self._stop if self._stop is not None else MAX_TIMESTAMP,
            fire_interval=self._interval)
        polled = (
            pbegin
            | "Impulses" >> impulse
            | "EveryFeed" >> beam.FlatMap(lambda _, feeds: [(f.url, f) for f in feeds],
                                          self._feeds).with_output_types(tuple[str, FeedSpec])
            | "PollFeed" >> beam.ParDo(PollFeedFn(self._policy, self._backoff,
                                                  self._max_backoff))
            .with_outputs("errors", main="entries"))
        firsts, earlier = (polled.entries
                           | "DropEarlierSightings" >> DropEarlierSightings(self._forget_after,
                                                                            self._clock))
        entry_errors = polled.errors | "EntryErrors" >> beam.Filter(lambda e: e.level == "entry")
        # Counting only (for the run summary's accounting); the records flow on below.
        _ = ((firsts, earlier, entry_errors) | "Sighted" >> beam.Flatten()
             | "CountEntries" >> beam.ParDo(_CountEntriesFn()))
        window = FixedWindows(self._interval)
        return {
            "entries": firsts | "WindowEntries" >> beam.WindowInto(window),
            "errors": polled.errors | "WindowErrors" >> beam.WindowInto(window),
            "duplicates": earlier | "WindowDuplicates" >> beam.WindowInto(window),
        }


def build_streaming(pipeline: beam.Pipeline, config: IngestConfig, poll_interval: float,
                    start: float | None = None, stop: float | None = None,
                    forget_after: dt.timedelta = DEFAULT_FORGET_AFTER,
                    backoff: float = DEFAULT_BACKOFF, impulse: beam.PTransform | None = None,
                    clock=None) -> dict:
    """Adds the unbounded pipeline to ``pipeline``; returns ``build``'s PCollections."""
    for where, message in config.subscriptions.problems:
        _LOG.warning("skipping feed source %s: %s", where, message)
    # Source problems are reported once at start, not as a global-window PCollection
    # that would have to be flattened with windowed ones.
    config = dataclasses.replace(config, subscriptions=Subscriptions(
        feeds=list(config.subscriptions.feeds)))
    stage = PollContinuously(config.subscriptions.feeds, config.policy, poll_interval, start,
                             stop, forget_after, backoff, impulse=impulse, clock=clock)
    return build(pipeline, config, clock, feed_stage=stage, across_windows=True)


def is_local_runner(options: PipelineOptions) -> bool:
    """True for runners that run in this process (they publish only when a job ends).

    Prism is not one of them: it runs jobs in its own process, with watermarks, and
    publishes each window when it closes (``tests/test_runners.py``)."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return (name or "").lower() in LOCAL_RUNNERS


def run_continuous(config: IngestConfig, options: PipelineOptions, clock=None,
                   quiet: bool = False):
    """``ingest --streaming``: the unbounded pipeline, or the watch loop when run locally."""
    from pipelines.summary import cleanup_staging, summarize

    opts = options.view_as(ContinuousOptions)
    if config.articles:
        raise SystemExit("newsbeam ingest --streaming: --articles (backfill) is a one-off; "
                         "run it without --streaming")
    if not config.subscriptions.feeds:
        raise SystemExit("newsbeam ingest --streaming: no valid --feeds")
    if opts.poll_interval <= 0:
        raise SystemExit("newsbeam ingest --streaming: --poll-interval must be positive")
    if opts.page_attempts < 1:
        raise SystemExit("newsbeam ingest --streaming: --page-attempts must be at least 1")
    forget = dt.timedelta(days=opts.forget_after_days)
    if is_local_runner(options) and opts.stop_after is None:
        print("newsbeam: the local runner publishes a streaming job's files only when it "
              "ends, so --streaming runs here as `newsbeam watch` (a batch pipeline per poll "
              "cycle, published every cycle). Use a streaming runner (Dataflow, Flink, or "
              "Prism locally: --runner PrismRunner) for the unbounded pipeline, or "
              "--stop-after SECONDS for a bounded local run.",
              file=sys.stderr, flush=True)
        if "://" in config.output:
            raise SystemExit("newsbeam ingest --streaming: locally, --output must be a "
                             "local folder")
        report = watch(WatchConfig(ingest=config, options=options,
                                   poll_interval=opts.poll_interval, cycles=opts.cycles,
                                   forget_after=forget, backoff=opts.feed_backoff,
                                   page_attempts=opts.page_attempts), clock)
        return None, report
    options.view_as(StandardOptions).streaming = True
    start = time.time()
    stop = start + opts.stop_after if opts.stop_after is not None else None
    with prism_for_run(options) as run_options:
        pipeline = beam.Pipeline(options=run_options)
        build_streaming(pipeline, config, opts.poll_interval, start, stop, forget,
                        opts.feed_backoff, clock=clock)
        result = pipeline.run()
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            if not is_prism(options):
                raise  # a remote job (Dataflow, Flink) runs on without its launcher
            # Prism stops with this process: windows already published stay, the open
            # window's staged files go.
            with contextlib.suppress(Exception):
                result.cancel()
            interrupted = True
        else:
            interrupted = False
            counts = counters(result)
    cleanup_staging(config.output, config.run_id)
    if interrupted:
        print(f"newsbeam: stopped; the windows published so far stay in {config.output}",
              file=sys.stderr, flush=True)
        raise SystemExit(130)
    summary = summarize(config.output, config.run_id, counts)
    if not quiet:
        print(summary.render())
    return result, summary
