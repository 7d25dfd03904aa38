"""The unbounded ingestion pipeline, for streaming runners (Dataflow, Flink).

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
      → the batch stages from ``pipelines.stages.build``: exact dedup, pages, language,
        topic, stories, and Parquet tables published once per window
        (``part-<run_id>-<window start>-<window end>-NNNNN.parquet``)

The story stage runs with ``across_windows``: its keyed steps (article id, content hash,
blocking keys, pointer jumping) keep state in the global window, so a same-body copy, a
near copy or an echo is matched to an original that came in an earlier window. That state
expires the story window (``--story-window-hours``, 72 by default) after the article's
published time, in watermark time; a copy arriving later opens a story of its own.

Decisions are taken in event time: a poll's time is its impulse's timestamp, so backoff
and forgetting are deterministic under ``TestStream``.

Locally, ``--streaming`` without a streaming runner runs :mod:`pipelines.watch` instead
(the CLI decides, with :func:`wants_watch`), because Beam's local runner publishes a
streaming pipeline's files only when it ends. Give ``--stop-after SECONDS`` to run this
pipeline locally anyway as a bounded test run.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP

from pipelines.execute import execute
from pipelines.ingest import parse_args
from pipelines.options import ContinuousOptions
from pipelines.stages import IngestConfig, build
from schemas import FeedSpec
from transforms.feeds.polling import (
    DEFAULT_BACKOFF,
    DEFAULT_FORGET_AFTER,
    DEFAULT_MAX_BACKOFF,
    DropEarlierSightings,
    PollFeedFn,
)
from transforms.fetching.http import FetchPolicy
from transforms.util import NAMESPACE

_LOG = logging.getLogger(__name__)
LOCAL_RUNNERS = frozenset({None, "", "directrunner", "direct", "fnapirunner",
                           "bundlebaseddirectrunner", "switchingdirectrunner", "prismrunner"})


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
                    clock=None, progress: str | None = None) -> dict:
    """Adds the unbounded pipeline to ``pipeline``; returns ``build``'s PCollections."""
    return build(pipeline, config, poll_source(config, poll_interval, start, stop,
                                               forget_after, backoff, impulse, clock),
                 clock=clock, across_windows=True, progress=progress)


def poll_source(config: IngestConfig, poll_interval: float, start: float | None = None,
                stop: float | None = None, forget_after: dt.timedelta = DEFAULT_FORGET_AFTER,
                backoff: float = DEFAULT_BACKOFF, impulse: beam.PTransform | None = None,
                clock=None) -> PollContinuously:
    """The unbounded pipeline's source. Source files that did not parse are reported once
    at start (a log line), not as a global-window PCollection that would have to be
    flattened with windowed ones."""
    for where, message in config.subscriptions.problems:
        _LOG.warning("skipping feed source %s: %s", where, message)
    return PollContinuously(config.subscriptions.feeds, config.policy, poll_interval, start,
                            stop, forget_after, backoff, impulse=impulse, clock=clock)


def is_local_runner(options: PipelineOptions) -> bool:
    """True for runners that run in this process (they publish only when a job ends)."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return (name or "").lower() in LOCAL_RUNNERS


def wants_watch(argv: Sequence[str]) -> bool:
    """Whether ``ingest --streaming`` with this command line runs as ``newsbeam watch``:
    on a local runner without ``--stop-after`` (see the module docstring)."""
    options = PipelineOptions(list(argv))
    return is_local_runner(options) and options.view_as(ContinuousOptions).stop_after is None


LOCAL_STREAMING_NOTE = (
    "newsbeam: the local runner publishes a streaming job's files only when it ends, so "
    "--streaming runs here as `newsbeam watch` (a batch pipeline per poll cycle, published "
    "every cycle). Use a streaming runner (Dataflow, Flink) for the unbounded pipeline, or "
    "--stop-after SECONDS for a bounded local run.")


def run(argv: Sequence[str] | None = None, clock=None, quiet: bool = False,
        console=None):
    """``ingest --streaming`` on a streaming runner (or locally with ``--stop-after``):
    runs the unbounded pipeline until it ends; returns ``(result, summary)``."""
    from transforms.sinks.lease import OutputLease, WriterOptions

    config, options = parse_args(argv, mode="streaming", command="newsbeam ingest --streaming")
    opts = options.view_as(ContinuousOptions)
    writer = options.view_as(WriterOptions)
    options.view_as(StandardOptions).streaming = True
    start = time.time()
    stop = start + opts.stop_after if opts.stop_after is not None else None
    source = poll_source(config, opts.poll_interval, start, stop,
                         dt.timedelta(days=opts.forget_after_days), opts.feed_backoff,
                         clock=clock)
    with OutputLease(config.output, config.run_id, wait=writer.lock_wait,
                     lease_seconds=writer.lock_lease, command="newsbeam ingest") as lease:
        if not is_local_runner(options):
            console = None  # no local folder the workers share: the runner's UI shows it
        outcome = execute(config, options, source, clock=clock, lease=lease, publish=False,
                          console=console, command="ingest --streaming",
                          feeds=len(config.subscriptions.feeds),
                          build_kwargs={"across_windows": True})
    if not quiet:
        print(outcome.summary.render())
    return outcome.result, outcome.summary
