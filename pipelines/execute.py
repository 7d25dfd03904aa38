"""The tail every run shares: run the pipeline, publish it, summarise it.

``newsbeam ingest`` (one batch), each ``newsbeam watch`` cycle and the unbounded pipeline
of ``ingest --streaming`` end the same way: the pipeline runs (with a progress line on the
console when asked), the run's staged files are published as one unit with their commit
manifest (batch and watch; the unbounded pipeline commits window by window itself), the
summary is read back from the published files, and its machine-readable form is added to
the commit manifest ``DIR/_runs/<run_id>.json`` under ``"summary"``::

    {"run_id": ..., "tables": ..., "skipped": ...,          # the commit (publish.py)
     "summary": {"command": "ingest", "entries_read": 30, "articles": 26,
                 "duplicates": 3, "entry_errors": 1, "feed_errors": 1,
                 "already_published": 0, "balanced": true, "exit_code": 0,
                 "errors_by_reason": {"fetch_page/http_404": 1, ...},
                 "duplicates_by_level": {...}, "articles_by_language": {...},
                 "timings": {"pipeline_s": 12.1, "publish_s": 0.2, "summary_s": 0.1,
                             "total_s": 12.6}, ...}}

The manifest is replaced atomically, so a reader sees it with or without the summary,
never half of it; the commit itself (its ``tables``) is unchanged by this.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.progress import ProgressReporter, filtered_stderr
from pipelines.runners import is_prism, prism_for_run
from pipelines.stages import build
from pipelines.summary import Summary, cleanup_staging, summarize
from transforms.sinks.publish import (
    TABLES,
    manifest_path,
    publish_run,
    read_manifest,
    recover,
    write_json,
)
from transforms.util import NAMESPACE

_LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3
"""Exit codes of ``newsbeam`` (with ``EXIT_BUSY`` = 75 from :mod:`transforms.sinks.lease`)."""


def new_run_id() -> str:
    """Sortable, unique run id: ``20241123T095600Z-1a2b3c``."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def local_runner(options: PipelineOptions) -> PipelineOptions:
    """Runs a bounded pipeline on the FnApiRunner when no runner (or the DirectRunner) is
    named.

    Beam's DirectRunner first tries Prism: it starts a gRPC worker-pool server for a
    loopback environment, then fails to fetch the Prism binary (offline) and falls back
    to the FnApiRunner, leaving that server and its polling threads to be torn down by
    the garbage collector. When they are still alive as the interpreter exits, a gRPC
    thread can wake up during finalisation inside C++ code and the process aborts with
    ``terminate called without an active exception`` (exit 134) after the run has
    finished. The FnApiRunner is what ran the pipeline anyway; naming it starts no server.

    ``--runner=PrismRunner`` without ``--prism_location`` gets the local Prism binary
    (:mod:`pipelines.runners`), so Beam downloads nothing.
    """
    from pipelines.runners import with_local_prism

    std = options.view_as(StandardOptions)
    if std.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        std.runner = "FnApiRunner"
    return with_local_prism(options)


class LeaseLost(RuntimeError):
    """The run's writer lease was taken over before it could publish."""


def counters(result) -> dict[str, int]:
    """The pipeline's ``newsbeam`` counters by name (committed values where available)."""
    out: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def exit_code(summary: Summary | None) -> int:
    """0: the accounting closes; 1: it does not; 3: something was tried and nothing came
    through (every feed or page failed: errors were written, but no article, duplicate or
    already-published entry)."""
    if summary is None:
        return EXIT_OK
    if not summary.balanced:
        return EXIT_FAILED
    if summary.nothing_through:
        return EXIT_NOTHING
    return EXIT_OK


def recover_output(root: str, quiet: bool = False) -> None:
    """Finishes what dead writers left in ``root`` (a compaction, a publish) before a run."""
    if "://" not in root:
        # A compaction killed half-way is finished first (it may hold a partition).
        from pipelines.compact import recover as recover_compaction

        recover_compaction(root)
    recovered = recover(root)
    if recovered and not quiet:
        print(f"newsbeam: {root}: {recovered.render()}", file=sys.stderr)


def _multi_processing(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import DirectOptions

    return options.view_as(DirectOptions).direct_running_mode == "multi_processing"


@dataclass
class Outcome:
    """What :func:`execute` did."""

    result: Any
    summary: Summary
    timings: dict[str, float] = field(default_factory=dict)


def attach_summary(root: str, run_id: str, summary: dict[str, Any]) -> bool:
    """Adds ``summary`` to the run's commit manifest (atomic replace); False when the run
    has no manifest (the unbounded pipeline commits per window)."""
    manifest = read_manifest(root, run_id)
    if manifest is None:
        return False
    manifest["summary"] = summary
    write_json(manifest_path(root, run_id), manifest)
    return True


def execute(config, options: PipelineOptions, source: beam.PTransform, *, clock=None,
            lease=None, pause=None, console=None, command: str = "ingest",
            publish: bool = True, skip_published: bool = True,
            extra_counts: dict[str, int] | None = None,
            added_counts: dict[str, int] | None = None, feeds: int | None = None,
            build_kwargs: dict[str, Any] | None = None) -> Outcome:
    """Builds the pipeline for ``source`` (:func:`pipelines.stages.build`), runs it,
    publishes and summarises the run.

    ``publish``: the launcher publishes the staged run as a unit (batch runs and watch
    cycles); False for the unbounded pipeline, which commits window by window.
    ``skip_published``: rows an earlier run published are left out (batch re-runs).
    ``extra_counts`` override Beam's counters in the summary (a watch cycle counts the
    entries its poll sorted); ``added_counts`` are added to them (a remembering batch run
    counts its polled entries on top of the backfill stage's own). ``console``
    (:class:`pipelines.options.Console`, the CLI's): a progress line on stderr while it
    runs, and in multi-processing mode the SDK workers' start-up lines filtered out; None
    (tests, libraries): neither.
    """
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    reporter_folder = None
    with contextlib.ExitStack() as stack:
        # Prism (--runner PrismRunner): a Prism process for this run, stopped at its end.
        options = stack.enter_context(prism_for_run(options))
        pipeline = beam.Pipeline(options=options)
        stream = None
        if console is not None and console.quiet_beam and _multi_processing(options):
            stream = stack.enter_context(filtered_stderr())
        if console is not None and console.progress:
            reporter = stack.enter_context(ProgressReporter(feeds_listed=feeds, stream=stream))
            reporter_folder = reporter.folder
        build(pipeline, config, source, clock=clock, launcher_publishes=publish,
              progress=reporter_folder, **(build_kwargs or {}))
        result = pipeline.run()
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            if not is_prism(options):
                raise  # a remote job (Dataflow, Flink) runs on without its launcher
            # Prism stops with this process: what was published stays (the windows of an
            # unbounded run), the staged files go.
            with contextlib.suppress(Exception):
                result.cancel()
            cleanup_staging(config.output, config.run_id)
            print(f"newsbeam: stopped; what was published so far stays in {config.output}",
                  file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        counts = counters(result)  # read from the runner, while Prism still runs
    timings["pipeline_s"] = time.monotonic() - t0
    t1 = time.monotonic()
    if pause:
        pause("before_publish")
    if lease is not None and lease.lost.is_set():
        raise LeaseLost(f"{config.output}: run {config.run_id} lost its writer lease "
                        "(its heartbeat stopped for longer than --lock-lease); nothing "
                        "was published, the next run starts afresh")
    if publish:
        manifest = publish_run(config.output, config.run_id, skip_published=skip_published,
                               pause=pause)
        for table in TABLES:
            counts[f"rows_written_{table}"] = manifest.rows(table)
    cleanup_staging(config.output, config.run_id)
    timings["publish_s"] = time.monotonic() - t1
    t2 = time.monotonic()
    counts.update(extra_counts or {})
    for name, n in (added_counts or {}).items():
        counts[name] = counts.get(name, 0) + n
    summary = summarize(config.output, config.run_id, counts)
    timings["summary_s"] = time.monotonic() - t2
    timings["total_s"] = time.monotonic() - t0
    summary.timings = {k: round(v, 3) for k, v in timings.items()}
    summary.command = command
    if publish:
        attach_summary(config.output, config.run_id, summary.to_json(exit_code(summary)))
    return Outcome(result, summary, timings)
