"""Batch runs that remember: ``newsbeam ingest`` over an output it wrote before.

A batch run into a local output folder keeps the same state as ``newsbeam watch``
(``DIR/_state/``, see :mod:`transforms.sinks.state`) and is, in effect, one watch cycle
(:func:`pipelines.cycle.run_cycle`), ending in the same run tail as every run
(:func:`pipelines.execute.execute`: publish, summary in the commit manifest):

* every feed is fetched with the validators of its last 200 (``If-None-Match`` /
  ``If-Modified-Since``), so an unchanged feed answers ``304`` and is not parsed;
* an entry whose fate (article, duplicate or entry error) an earlier run published is
  not fetched again; it is counted as seen in an earlier run;
* the run's journal is written before its pipeline starts and folded into the state
  files only after its output is published, so a run killed at any point leaves the
  state either before or after it, and the next run (batch or watch) finishes the fold.

Rows an earlier run already published are still left out at publish time, as in every
batch run, so an output written before the state existed (or with ``--refetch``) is
re-run without duplicated rows, and learns its state on the way.

Run it twice; the second run fetches nothing that did not change::

    newsbeam ingest --feeds feeds.yaml --output ./out
    newsbeam ingest --feeds feeds.yaml --output ./out

Object-store outputs (``gs://``, ``s3://``) keep no state: their batch runs read every
feed and page again and rely on the publish-time check alone.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.cycle import WatchConfig, recover, run_cycle
from pipelines.execute import Outcome
from pipelines.options import ContinuousOptions, IngestOptions
from pipelines.stages import IngestConfig
from transforms.fetching.politeness import PoliteFetcher
from transforms.sinks.lease import OutputLease
from transforms.sinks.state import StateStore


def remembers(config: IngestConfig, options: PipelineOptions) -> bool:
    """Whether this batch run keeps state: feeds to read, a local output, no
    ``--refetch``."""
    return (bool(config.subscriptions.feeds) and "://" not in config.output
            and not options.view_as(IngestOptions).refetch)


def run_remembered(config: IngestConfig, options: PipelineOptions, lease: OutputLease, *,
                   clock: Callable[[], dt.datetime] | None = None, quiet: bool = False,
                   pause: Callable[[str], None] | None = None, console=None) -> Outcome:
    """Runs one remembering batch run under ``lease``; returns its :class:`Outcome`.

    The caller has recovered interrupted publishes already; interrupted runs' journals
    are folded in here first.
    """
    continuous = options.view_as(ContinuousOptions)
    watch_config = WatchConfig(
        ingest=config, options=options, cycles=1,
        forget_after=dt.timedelta(days=continuous.forget_after_days),
        backoff=continuous.feed_backoff, page_attempts=continuous.page_attempts)
    store = StateStore(config.output)
    recovered = recover(store, config.output, watch_config.forget_after,
                        watch_config.page_attempts)
    if recovered and not quiet:
        print(f"newsbeam: {config.output}: folded {recovered} interrupted run(s) into "
              f"{store.dir}", file=sys.stderr)
    fetcher = PoliteFetcher(config.policy, threads=config.fetch_threads, name="fetch-feed")
    try:
        cycle = run_cycle(1, watch_config, store, fetcher,
                          clock or (lambda: dt.datetime.now(dt.UTC)), first=True,
                          lease=lease, console=console, batch=True, pipeline_clock=clock,
                          pause=pause)
    finally:
        fetcher.close()
    summary = cycle.summary
    assert summary is not None  # a batch cycle always runs and summarises
    return Outcome(cycle.result, summary, dict(summary.timings))
