"""The ingestion pipeline: a source of entries → deduplicated articles in Parquet.

Run it::

    newsbeam ingest --feeds feeds.yaml --output ./out
    python -m pipelines.ingest --feeds https://example.org/rss --output ./out \\
        --runner DataflowRunner --project P --region R --temp_location gs://B/tmp \\
        --setup_file ./setup.py

``parse_args`` reads and validates the command line (options: :mod:`pipelines.options`),
``build`` adds the transforms to a pipeline for any source of entries (feeds read once, a
backfill file, the unbounded poller of :mod:`pipelines.streaming`, a cycle of
:mod:`pipelines.watch`), ``run`` runs a bounded batch and publishes it through the run tail
(:mod:`pipelines.execute`). Which mode a command line asks for is decided by the CLI
(:mod:`pipelines.cli`) alone: this module imports neither the streaming nor the watch mode.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipelines import options as cli_options
from pipelines.execute import (
    LeaseLost,
    counters,
    execute,
    local_runner,
    new_run_id,
    recover_output,
)
from pipelines.preflight import articles_problem, fail, output_problem
from pipelines.rerun import remembers, run_remembered
from pipelines.stages import (
    IngestConfig,
    ReadBackfillFile,
    ReadFeedsOnce,
    Sources,
    batch_source,
    build,
)
from transforms.extraction.language import parse_languages
from transforms.feeds.sources import SourceError, Subscriptions, read_sources
from transforms.fetching.http import FetchPolicy, user_agent_for
from transforms.fetching.proxy import ProxyConfigError, proxies_from
from transforms.stories.similarity import MissingBackendError, make_similarity
from transforms.topics.assign import load_category_map
from transforms.topics.classify import encoder_available

_LOG = logging.getLogger(__name__)

IngestOptions = cli_options.IngestOptions
ContinuousOptions = cli_options.ContinuousOptions
__all__ = ["ContinuousOptions", "IngestConfig", "IngestOptions", "LeaseLost", "ReadBackfillFile",
           "ReadFeedsOnce", "Sources", "batch_source", "build", "counters", "local_runner",
           "new_run_id", "parse_args", "run"]


def _known_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in cli_options.WATCH_GROUPS:
        cli_options.GROUPS[name][1](parser)
    return parser


def parse_args(argv: Sequence[str] | None, mode: str = "ingest",
               command: str = "newsbeam ingest") -> tuple[IngestConfig, PipelineOptions]:
    """Parses and validates the command line of one ``mode`` (:data:`pipelines.options.MODES`).

    On bad input, prints one line to stderr and raises :class:`UsageError` (exit code 2)
    before anything is fetched: missing or contradictory options, an ``--output`` that
    cannot be written, an ``--articles`` file that cannot be read, ``--feeds`` that give
    no valid feed (see :mod:`pipelines.preflight`).
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    values, _ = _known_parser().parse_known_args(args)
    # Beam parses the whole line too: newsbeam's options through IngestOptions and
    # ContinuousOptions (registered above by their module), the rest as Beam's own.
    from transforms.sinks.lease import WriterOptions  # noqa: F401 - registers --lock-*

    options = PipelineOptions(args)
    # Workers import this project as a package; pickled main sessions are not needed.
    options.view_as(SetupOptions).save_main_session = False
    errors = cli_options.validate(values, mode)
    config = config_from(values, errors)
    if errors:
        raise fail(f"{command}: " + "; ".join(errors))
    return config, options


def config_from(values, errors: list[str]) -> IngestConfig | None:
    """The run's config from validated option values; the checks that read files or load
    models add their problems to ``errors`` (then the config returned is not to be used)."""
    if values.topic_encoder and (problem := encoder_available()):
        errors.append(f"--topic-encoder: {problem}")
    if values.story_similarity != "lexical":
        try:
            make_similarity(values.story_similarity)
        except MissingBackendError as e:
            errors.append(f"--story-similarity: {e}")
    if values.output and (problem := output_problem(str(values.output))):
        errors.append(problem)
    if values.articles and (problem := articles_problem(values.articles)):
        errors.append(problem)
    languages: frozenset[str] = frozenset()
    if values.languages is not None:
        try:
            languages = parse_languages(values.languages)
        except ValueError as e:
            errors.append(str(e))
    proxies, no_proxy = (), ""
    try:
        proxies, no_proxy = proxies_from(values.proxy)
    except ProxyConfigError as e:
        errors.append(str(e))
    subs = Subscriptions()
    try:
        subs = read_sources(values.feeds)
    except (SourceError, OSError) as e:
        errors.append(str(e))
    else:
        if values.feeds and not subs.feeds:
            found = "; ".join(f"{where}: {message}" for where, message in subs.problems[:3])
            errors.append("--feeds gave no valid feed" + (f" ({found})" if found else ""))
    try:
        category_map = load_category_map(values.category_map)
    except (ValueError, OSError) as e:
        errors.append(f"--category-map: {e}")
        category_map = {}
    if errors:
        return None
    policy = FetchPolicy(allow_private_network=values.allow_private_network,
                         user_agent=values.user_agent or user_agent_for(values.contact_url),
                         max_bytes=values.max_page_bytes, total_timeout=values.timeout,
                         per_host_concurrency=values.per_host_concurrency,
                         per_host_delay=values.per_host_delay,
                         max_retry_after=values.max_retry_after,
                         proxies=proxies, no_proxy=no_proxy)
    return IngestConfig(output=str(values.output).rstrip("/"),
                        run_id=values.run_id or new_run_id(),
                        policy=policy, subscriptions=subs, articles=values.articles,
                        fetch_threads=values.fetch_threads, category_map=category_map,
                        topic_threshold=values.topic_threshold,
                        topic_encoder=values.topic_encoder,
                        story_window_hours=values.story_window_hours,
                        story_threshold=values.story_threshold,
                        story_similarity=values.story_similarity,
                        drop_echoes=values.drop_echoes, languages=languages,
                        credentials={f.url: f.credentials for f in subs.feeds
                                     if f.credentials})


def run(argv: Sequence[str] | None = None, clock=None, quiet: bool = False,
        pause=None, console=None):
    """Parses ``argv``, runs the bounded pipeline, publishes it and prints a summary;
    returns ``(result, summary)``.

    The whole run holds the output folder's writer lease (:mod:`transforms.sinks.lease`): a
    second writer waits ``--lock-wait`` seconds, then gets :class:`LeaseBusy`. Before the
    pipeline starts, what dead runs left is recovered; after it ends, the run is published
    as one unit with a commit manifest that also carries the run's summary
    (:func:`pipelines.execute.execute`). ``pause`` (fault injection) is called with a step
    name between the steps of the publish. ``console`` (:class:`pipelines.options.Console`):
    a progress line on stderr, and Beam's notices kept off it.

    A run with feeds over a local output remembers (:mod:`pipelines.rerun`, unless
    ``--refetch``): it runs as one poll cycle over ``DIR/_state``, through the same run tail,
    and returns the same ``(result, summary)``.
    """
    from transforms.sinks.lease import OutputLease, WriterOptions

    config, options = parse_args(argv)
    if options.view_as(StandardOptions).streaming:
        # Which mode a line asks for is the CLI's decision (pipelines.cli.run_ingest).
        raise fail("newsbeam ingest: --streaming runs through pipelines.streaming.run "
                   "(or the newsbeam command), not pipelines.ingest.run")
    writer = options.view_as(WriterOptions)
    with OutputLease(config.output, config.run_id, wait=writer.lock_wait,
                     lease_seconds=writer.lock_lease, command="newsbeam ingest") as lease:
        recover_output(config.output, quiet=quiet)
        if remembers(config, options):
            outcome = run_remembered(config, local_runner(options), lease, clock=clock,
                                     quiet=quiet, pause=pause, console=console)
        else:
            outcome = execute(config, local_runner(options), batch_source(config, clock),
                              clock=clock, lease=lease, pause=pause, console=console,
                              command="ingest", feeds=len(config.subscriptions.feeds))
    if not quiet:
        print(outcome.summary.render(), file=sys.stdout)
    return outcome.result, outcome.summary


if __name__ == "__main__":  # ``python -m pipelines.ingest ...`` = ``newsbeam ingest ...``
    from pipelines.cli import console_main

    sys.argv.insert(1, "ingest")
    console_main()
