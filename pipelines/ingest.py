"""The ingestion pipeline: feeds (or a backfill file) → deduplicated articles in Parquet.

Run it::

    newsbeam ingest --feeds feeds.yaml --output ./out
    python -m pipelines.ingest --feeds https://example.org/rss --output ./out \\
        --runner DataflowRunner --project P --region R --temp_location gs://B/tmp \\
        --setup_file ./setup.py

Any Beam pipeline option may follow. ``parse_args`` reads the command line, ``build``
adds the transforms to a pipeline (tests call it directly), ``run`` does both, waits,
and prints a summary read back from the Parquet that was written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from pipelines.preflight import articles_problem, fail, output_problem
from schemas import ARTICLE_SCHEMA, DUPLICATE_SCHEMA, ERROR_SCHEMA
from transforms.extraction.extract import FetchArticles
from transforms.extraction.language import DetectLanguageFn, FilterLanguagesFn, parse_languages
from transforms.feeds.backfill import ReadBackfill
from transforms.feeds.parse import ReadFeeds
from transforms.feeds.sources import SourceError, Subscriptions, read_sources
from transforms.fetching.http import (
    DEFAULT_CONTACT_URL,
    DEFAULT_USER_AGENT,
    FetchPolicy,
    user_agent_for,
)
from transforms.fetching.proxy import ProxyConfigError, proxies_from
from transforms.sinks.parquet import WriteParquetTable, article_partition, date_partition
from transforms.stories.exact import DropExactDuplicates
from transforms.stories.similarity import SIMILARITIES, MissingBackendError, make_similarity
from transforms.stories.stage import AssignStories
from transforms.topics.assign import AssignTopicFn, load_category_map
from transforms.topics.classify import DEFAULT_THRESHOLD as DEFAULT_TOPIC_THRESHOLD
from transforms.topics.classify import encoder_available
from transforms.util import NAMESPACE, error_record

_LOG = logging.getLogger(__name__)


class IngestOptions(PipelineOptions):
    """Options of ``newsbeam ingest``; every Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--feeds", action="append", default=[],
            help="Feed source: an http(s) feed URL, an OPML file, a YAML file with per-feed "
                 "options, or a text file with one URL per line. Repeatable. Default: none.")
        parser.add_argument(
            "--articles", default=None,
            help="JSON Lines file of already-fetched articles to backfill (url and text "
                 "required). Default: none.")
        parser.add_argument(
            "--output", default=None,
            help="Output folder (local path, gs:// or s3://): articles/, duplicates/ and "
                 "errors/ are written below it. Required.")
        parser.add_argument(
            "--allow-private-network", dest="allow_private_network", action="store_true",
            default=False,
            help="Allow URLs that resolve to loopback, private or link-local addresses. "
                 "Default: refused.")
        parser.add_argument(
            "--proxy", default=None,
            help="HTTP(S) proxy for every request, e.g. http://proxy:3128 (user:password@ "
                 "allowed); https targets are tunnelled with CONNECT. The private-network "
                 "guard still applies to the target. '' turns proxies off. Default: the "
                 "HTTPS_PROXY / HTTP_PROXY environment variables (per scheme, with NO_PROXY), "
                 "else none.")
        parser.add_argument(
            "--user-agent", dest="user_agent", default=None,
            help="User-Agent for every request. Default: 'newsbeam/0.1 (+CONTACT_URL)', "
                 f"i.e. {DEFAULT_USER_AGENT!r}.")
        parser.add_argument(
            "--contact-url", dest="contact_url", default=DEFAULT_CONTACT_URL,
            help="Where site owners can reach the operator (a URL or mailto:), named in the "
                 f"default User-Agent. Default: {DEFAULT_CONTACT_URL}.")
        parser.add_argument(
            "--per-host-concurrency", dest="per_host_concurrency", type=int, default=2,
            help="Most requests in flight to one host, per worker. Default: 2.")
        parser.add_argument(
            "--per-host-delay", dest="per_host_delay", type=float, default=1.0,
            help="Least seconds between the starts of two requests to one host, per worker; "
                 "a longer robots.txt Crawl-delay (up to 30 s) wins. Default: 1.")
        parser.add_argument(
            "--max-retry-after", dest="max_retry_after", type=float, default=120.0,
            help="Longest Retry-After (seconds) waited for on 429/503; a longer one makes "
                 "the failure final. Default: 120.")
        parser.add_argument(
            "--fetch-threads", dest="fetch_threads", type=int, default=16,
            help="Concurrent page fetches per worker. Default: 16.")
        parser.add_argument(
            "--max-page-bytes", dest="max_page_bytes", type=int, default=10 * 1024 * 1024,
            help="Largest body read per response, after decompression. Default: 10485760.")
        parser.add_argument(
            "--timeout", type=float, default=30.0,
            help="Total seconds allowed per request attempt. Default: 30.")
        parser.add_argument(
            "--category-map", dest="category_map", default=None,
            help="YAML file mapping category strings to topic slugs, merged over the "
                 "built-in map. Default: built-in only.")
        parser.add_argument(
            "--topic-threshold", dest="topic_threshold", type=float,
            default=DEFAULT_TOPIC_THRESHOLD,
            help="Confidence (0-1) the built-in topic classifier needs to assign a topic; "
                 "below it the article stays 'unclassified'. 1 turns the classifier off in "
                 f"practice. Default: {DEFAULT_TOPIC_THRESHOLD}.")
        parser.add_argument(
            "--topic-encoder", dest="topic_encoder", action="store_true", default=False,
            help="Blend the sentence-encoder head into the built-in topic classifier: much "
                 "better outside English and on topics the lexicons know little of, but "
                 "about 16 ms per article instead of 1 ms. It uses the same encoder as the "
                 "multilingual story similarity (loaded once per worker). "
                 "Default: off (lexicons alone).")
        parser.add_argument(
            "--story-window-hours", dest="story_window_hours", type=float, default=72.0,
            help="Articles published within this many hours of each other can join one "
                 "story; story state expires after it. Default: 72.")
        parser.add_argument(
            "--story-threshold", dest="story_threshold", type=float, default=None,
            help="Similarity (0-1) at or above which an article joins an earlier story. "
                 "Default: the similarity's own (multilingual: 0.587, lexical: 0.524).")
        parser.add_argument(
            "--story-similarity", dest="story_similarity", default="multilingual",
            choices=list(SIMILARITIES),
            help="Story similarity: 'multilingual' joins the lexical channels with the "
                 "packaged multilingual sentence encoder (links stories across languages "
                 "and wordings); 'lexical' is faster and needs no encoder; 'embedding' "
                 "adds a locally installed sentence-transformers model. "
                 "Default: multilingual.")
        parser.add_argument(
            "--drop-echoes", dest="drop_echoes", action="store_true", default=False,
            help="Write story leads only; echoes go to duplicates/ (level echo). "
                 "Default: echoes are written with the lead's story_id.")
        parser.add_argument(
            "--languages", default=None,
            help="Comma-separated ISO 639 codes of the languages to keep, e.g. en,uk; an "
                 "article in any other language is left out as an error record with reason "
                 "language_filtered ('und' keeps undetermined ones). Default: all.")
        parser.add_argument(
            "--refetch", action="store_true", default=False,
            help="Read every feed and listed page again, ignoring what DIR/_state remembers "
                 "(feed validators, entries published by earlier runs); rows already "
                 "published are still not written twice. Default: off (a run over a local "
                 "output skips unchanged feeds and entries it has seen).")
        parser.add_argument(
            "--run-id", dest="run_id", default=None,
            help="Identifier written into output file names. Default: UTC time + random.")


@dataclass
class IngestConfig:
    """Everything ``build`` needs, validated."""

    output: str
    run_id: str
    policy: FetchPolicy
    subscriptions: Subscriptions = field(default_factory=Subscriptions)
    articles: str | None = None
    fetch_threads: int = 16
    category_map: dict = field(default_factory=dict)
    story_window_hours: float = 72.0
    story_threshold: float | None = None
    story_similarity: str = "multilingual"
    drop_echoes: bool = False
    topic_threshold: float = DEFAULT_TOPIC_THRESHOLD
    topic_encoder: bool = False
    languages: frozenset[str] = frozenset()
    """Languages to keep (empty: all)."""
    credentials: dict = field(default_factory=dict, repr=False)
    """Feed URL → the feed's own request headers, for its pages on the feed's origin."""


def new_run_id() -> str:
    """Sortable, unique run id: ``20241123T095600Z-1a2b3c``."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def parse_args(argv: Sequence[str] | None) -> tuple[IngestConfig, PipelineOptions]:
    """Parses and validates the command line.

    On bad input, prints one line to stderr and raises :class:`UsageError` (exit code 2)
    before anything is fetched: missing or contradictory options, an ``--output`` that
    cannot be written, an ``--articles`` file that cannot be read, ``--feeds`` that give
    no valid feed (see :mod:`pipelines.preflight`).
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    if "-h" in args or "--help" in args:
        # Beam's own parser only knows -h; list newsbeam's options, then Beam's pointer.
        parser = argparse.ArgumentParser(
            prog="newsbeam ingest", description="Ingest feeds into Parquet.",
            epilog="Any Beam pipeline option (--runner, --project, --streaming, "
                   "--direct_num_workers, ...) is passed to the runner.")
        IngestOptions._add_argparse_args(parser)
        parser.print_help()
        raise SystemExit(0)
    options = PipelineOptions(args)
    opts = options.view_as(IngestOptions)
    # Workers import this project as a package; pickled main sessions are not needed.
    options.view_as(SetupOptions).save_main_session = False
    errors = []
    if not opts.output:
        errors.append("--output DIR is required")
    if not opts.feeds and not opts.articles:
        errors.append("give at least one --feeds SOURCE or --articles FILE")
    if opts.fetch_threads < 1:
        errors.append("--fetch-threads must be at least 1")
    if not 0.0 <= opts.topic_threshold <= 1.0:
        errors.append("--topic-threshold must be between 0 and 1")
    if opts.topic_encoder and (problem := encoder_available()):
        errors.append(f"--topic-encoder: {problem}")
    if opts.story_window_hours <= 0:
        errors.append("--story-window-hours must be positive")
    if opts.story_threshold is not None and not 0.0 <= opts.story_threshold <= 1.0:
        errors.append("--story-threshold must be between 0 and 1")
    if opts.story_similarity != "lexical":
        try:
            make_similarity(opts.story_similarity)
        except MissingBackendError as e:
            errors.append(f"--story-similarity: {e}")
    if opts.max_page_bytes < 1024:
        errors.append("--max-page-bytes must be at least 1024")
    if opts.per_host_concurrency < 1:
        errors.append("--per-host-concurrency must be at least 1")
    if opts.per_host_delay < 0 or opts.max_retry_after < 0:
        errors.append("--per-host-delay and --max-retry-after must not be negative")
    if opts.output and (problem := output_problem(str(opts.output))):
        errors.append(problem)
    if opts.articles and (problem := articles_problem(opts.articles)):
        errors.append(problem)
    languages: frozenset[str] = frozenset()
    if opts.languages is not None:
        try:
            languages = parse_languages(opts.languages)
        except ValueError as e:
            errors.append(str(e))
    proxies, no_proxy = (), ""
    try:
        proxies, no_proxy = proxies_from(opts.proxy)
    except ProxyConfigError as e:
        errors.append(str(e))
    subs = Subscriptions()
    try:
        subs = read_sources(opts.feeds)
    except (SourceError, OSError) as e:
        errors.append(str(e))
    else:
        if opts.feeds and not subs.feeds:
            found = "; ".join(f"{where}: {message}" for where, message in subs.problems[:3])
            errors.append("--feeds gave no valid feed" + (f" ({found})" if found else ""))
    try:
        category_map = load_category_map(opts.category_map)
    except (ValueError, OSError) as e:
        errors.append(f"--category-map: {e}")
        category_map = {}
    if errors:
        raise fail("newsbeam ingest: " + "; ".join(errors))
    policy = FetchPolicy(allow_private_network=opts.allow_private_network,
                         user_agent=opts.user_agent or user_agent_for(opts.contact_url),
                         max_bytes=opts.max_page_bytes, total_timeout=opts.timeout,
                         per_host_concurrency=opts.per_host_concurrency,
                         per_host_delay=opts.per_host_delay,
                         max_retry_after=opts.max_retry_after,
                         proxies=proxies, no_proxy=no_proxy)
    config = IngestConfig(output=str(opts.output).rstrip("/"), run_id=opts.run_id or new_run_id(),
                          policy=policy, subscriptions=subs, articles=opts.articles,
                          fetch_threads=opts.fetch_threads, category_map=category_map,
                          topic_threshold=opts.topic_threshold,
                          topic_encoder=opts.topic_encoder,
                          story_window_hours=opts.story_window_hours,
                          story_threshold=opts.story_threshold,
                          story_similarity=opts.story_similarity,
                          drop_echoes=opts.drop_echoes, languages=languages,
                          credentials={f.url: f.credentials for f in subs.feeds
                                       if f.credentials})
    return config, options


def build(pipeline: beam.Pipeline, config: IngestConfig, clock=None,
          feed_stage: beam.PTransform | None = None, across_windows: bool = False,
          launcher_publishes: bool = False) -> dict:
    """Adds the ingestion transforms to ``pipeline``; returns the main PCollections.

    ``feed_stage`` (continuous modes) replaces reading ``config``'s feeds once: a
    PTransform applied to the pipeline returning ``{"entries", "errors", "duplicates"}``.
    ``across_windows`` (the unbounded pipeline, whose feed stage emits fixed windows):
    the story stage matches copies and echoes of earlier windows too.
    ``launcher_publishes`` (``run`` and ``watch``): the pipeline stops at staged files and
    the launcher publishes the run as one unit (:func:`transforms.sinks.publish.publish_run`);
    otherwise each table and window is published and committed inside the pipeline.
    """
    now = dt.datetime.now(dt.UTC)
    entry_sets, error_sets, duplicate_sets = [], [], []
    subs = config.subscriptions
    if feed_stage is not None:
        polled = pipeline | "PollFeeds" >> feed_stage
        entry_sets.append(polled["entries"])
        error_sets.append(polled["errors"])
        duplicate_sets.append(polled["duplicates"])
    elif subs.feeds:
        feeds = (pipeline | "Subscriptions" >> beam.Create(subs.feeds)
                 | "ReadFeeds" >> ReadFeeds(config.policy, clock))
        entry_sets.append(feeds.entries)
        error_sets.append(feeds.errors)
    if subs.problems:
        error_sets.append(pipeline | "SourceProblems" >> beam.Create([
            error_record(where, "", "feed", "read_sources", "bad_source", message, None, 0, now)
            for where, message in subs.problems]))
    if config.articles:
        backfill = pipeline | "Backfill" >> ReadBackfill(config.articles, clock)
        entry_sets.append(backfill.entries)
        error_sets.append(backfill.errors)
    entries = entry_sets | "AllEntries" >> beam.Flatten()
    unique, duplicates = entries | "DropExactDuplicates" >> DropExactDuplicates(clock=clock)
    if duplicate_sets:
        duplicates = [duplicates, *duplicate_sets] | "AllDuplicates" >> beam.Flatten()
    pages = unique | "FetchArticles" >> FetchArticles(config.policy, config.fetch_threads,
                                                      clock=clock,
                                                      credentials=config.credentials)
    error_sets.append(pages.errors)
    articles = pages.articles | "DetectLanguage" >> beam.ParDo(DetectLanguageFn())
    if config.languages:
        kept = articles | "FilterLanguages" >> beam.ParDo(
            FilterLanguagesFn(config.languages)).with_outputs("errors", main="articles")
        articles = kept.articles
        error_sets.append(kept.errors)
    articles = (
        articles
        | "AssignTopic" >> beam.ParDo(
            AssignTopicFn(config.category_map, config.topic_threshold,
                          use_encoder=config.topic_encoder))
    )
    # Story stage: exact and near copies are dropped, echoes share the first article's id.
    # The unbounded pipeline reads no seeds: their side input (this batch's time bounds)
    # is never ready for a global-window reader, which held every window back until the
    # job ended; its keyed state plays their part instead.
    stories = articles | "AssignStories" >> AssignStories(
        make_similarity(config.story_similarity), config.story_threshold,
        dt.timedelta(hours=config.story_window_hours), config.drop_echoes,
        existing=None if across_windows else config.output, run_id=config.run_id,
        clock=clock, across_windows=across_windows)
    articles = stories.articles
    duplicates = (duplicates, stories.duplicates) | "WithStoryDuplicates" >> beam.Flatten()
    errors = error_sets | "AllErrors" >> beam.Flatten()
    out = config.output
    written = {
        # A bounded run is published as one unit by the launcher once the pipeline has
        # finished (run()); the unbounded pipeline commits window by window.
        "articles": articles | "WriteArticles" >> WriteParquetTable(
            out, "articles", ARTICLE_SCHEMA, article_partition, config.run_id,
            publish=not launcher_publishes),
        "duplicates": duplicates | "WriteDuplicates" >> WriteParquetTable(
            out, "duplicates", DUPLICATE_SCHEMA, date_partition, config.run_id,
            publish=not launcher_publishes),
        "errors": errors | "WriteErrors" >> WriteParquetTable(
            out, "errors", ERROR_SCHEMA, date_partition, config.run_id,
            publish=not launcher_publishes),
    }
    return {"articles": articles, "duplicates": duplicates, "errors": errors,
            "written": written}


def counters(result) -> dict[str, int]:
    """The pipeline's ``newsbeam`` counters by name (committed values where available)."""
    out: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


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
    """
    std = options.view_as(StandardOptions)
    if std.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        std.runner = "FnApiRunner"
    return options


def run(argv: Sequence[str] | None = None, clock=None, quiet: bool = False,
        pause=None):
    """Parses ``argv``, runs the pipeline to completion, publishes it and prints a summary.

    The whole run holds the output folder's writer lease (:mod:`transforms.sinks.lease`): a
    second writer waits ``--lock-wait`` seconds, then gets :class:`LeaseBusy`. Before the
    pipeline starts, what dead runs left is recovered (:func:`transforms.sinks.publish.recover`);
    after it ends, the run is published as one unit with a commit manifest. ``pause``
    (fault injection) is called with a step name between the steps of the publish.
    """
    from pipelines.summary import summarize
    from transforms.sinks.lease import OutputLease, WriterOptions
    from transforms.sinks.publish import TABLES, publish_run, recover

    config, options = parse_args(argv)
    writer = options.view_as(WriterOptions)
    with OutputLease(config.output, config.run_id, wait=writer.lock_wait,
                     lease_seconds=writer.lock_lease, command="newsbeam ingest") as lease:
        if options.view_as(StandardOptions).streaming:
            # Continuous ingestion: the unbounded pipeline, or locally the watch loop.
            from pipelines.streaming import run_continuous

            return run_continuous(config, options, clock, quiet)
        if "://" not in config.output:
            # A compaction killed half-way is finished first (it may hold a partition).
            from pipelines.compact import recover as recover_compaction

            recover_compaction(config.output)
        recovered = recover(config.output)
        if recovered and not quiet:
            print(f"newsbeam: {config.output}: {recovered.render()}", file=sys.stderr)
        from pipelines.rerun import remembers, run_remembered

        if remembers(config, options):
            return run_remembered(config, options, lease, clock, quiet, pause)
        pipeline = beam.Pipeline(options=local_runner(options))
        build(pipeline, config, clock, launcher_publishes=True)
        result = pipeline.run()
        result.wait_until_finish()
        if pause:
            pause("before_publish")
        if lease.lost.is_set():
            raise LeaseLost(f"{config.output}: run {config.run_id} lost its writer lease "
                            "(its heartbeat stopped for longer than --lock-lease); nothing "
                            "was published, the next run starts afresh")
        manifest = publish_run(config.output, config.run_id, skip_published=True,
                               pause=pause)
    counts = counters(result)
    for table in TABLES:
        counts[f"rows_written_{table}"] = manifest.rows(table)
    summary = summarize(config.output, config.run_id, counts)
    if not quiet:
        print(summary.render(), file=sys.stdout)
    return result, summary


class LeaseLost(RuntimeError):
    """The run's writer lease was taken over before it could publish."""


def main(argv: Sequence[str] | None = None) -> int:
    """``newsbeam ingest``: 0 when the accounting balances, 1 when it does not,
    :data:`~transforms.sinks.lease.EXIT_BUSY` when another run holds the output folder."""
    from transforms.sinks.lease import EXIT_BUSY, LeaseBusy

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _, summary = run(argv)
    except LeaseBusy as e:
        print(f"newsbeam ingest: {e}", file=sys.stderr)
        return EXIT_BUSY
    except LeaseLost as e:
        print(f"newsbeam ingest: {e}", file=sys.stderr)
        return EXIT_BUSY
    return 0 if summary is None or getattr(summary, "balanced", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
