"""The stages of every ingestion run, for any source of entries.

``build(pipeline, config, source)`` adds them to a pipeline::

    source → exact dedup → pages → language (→ --languages filter) → topic → stories
           → Parquet tables

A *source* is a PTransform applied to the pipeline that returns ``{"entries", "errors"}``
and optionally ``"duplicates"``: :class:`ReadFeedsOnce` and :class:`ReadBackfillFile` here
(:func:`batch_source` joins them for a batch run), ``PollContinuously`` for the unbounded
pipeline (:mod:`pipelines.streaming`) and ``CycleInput`` for one cycle of
:mod:`pipelines.watch`. Tests call ``build`` directly with a TestPipeline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import apache_beam as beam

from pipelines.progress import CountProgress
from schemas import ARTICLE_SCHEMA, DUPLICATE_SCHEMA, ERROR_SCHEMA
from transforms.extraction.extract import FetchArticles
from transforms.extraction.language import DetectLanguageFn, FilterLanguagesFn
from transforms.feeds.backfill import ReadBackfill
from transforms.feeds.parse import ReadFeeds
from transforms.feeds.sources import Subscriptions
from transforms.fetching.http import FetchPolicy
from transforms.sinks.parquet import WriteParquetTable, article_partition, date_partition
from transforms.stories.exact import DropExactDuplicates
from transforms.stories.similarity import make_similarity
from transforms.stories.stage import AssignStories
from transforms.topics.assign import AssignTopicFn
from transforms.topics.classify import DEFAULT_THRESHOLD as DEFAULT_TOPIC_THRESHOLD
from transforms.util import error_record


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


def source_problems(subscriptions: Subscriptions, now: dt.datetime) -> list:
    """One feed-level error record per source file that did not parse."""
    return [error_record(where, "", "feed", "read_sources", "bad_source", message, None, 0, now)
            for where, message in subscriptions.problems]


class ReadFeedsOnce(beam.PTransform):
    """Source: every subscribed feed read once → ``{"entries", "errors"}``; a source file
    that did not parse is one error record."""

    def __init__(self, subscriptions: Subscriptions, policy: FetchPolicy, clock=None):
        super().__init__()
        self._subs = subscriptions
        self._policy = policy
        self._clock = clock

    def expand(self, pbegin):
        out = {}
        if self._subs.feeds:
            feeds = (pbegin | "Subscriptions" >> beam.Create(self._subs.feeds)
                     | "ReadFeeds" >> ReadFeeds(self._policy, self._clock))
            out = {"entries": feeds.entries, "errors": feeds.errors}
        if self._subs.problems:
            problems = pbegin | "SourceProblems" >> beam.Create(
                source_problems(self._subs, dt.datetime.now(dt.UTC)))
            out["errors"] = ((out["errors"], problems) | "WithSourceProblems" >> beam.Flatten()
                             if "errors" in out else problems)
        return out


class ReadBackfillFile(beam.PTransform):
    """Source: ``--articles`` lines → ``{"entries", "errors"}``."""

    def __init__(self, pattern: str, clock=None):
        super().__init__()
        self._pattern = pattern
        self._clock = clock

    def expand(self, pbegin):
        backfill = pbegin | "Backfill" >> ReadBackfill(self._pattern, self._clock)
        return {"entries": backfill.entries, "errors": backfill.errors}


class Sources(beam.PTransform):
    """Several sources as one: each output (entries, errors, duplicates) flattened."""

    def __init__(self, sources: dict[str, beam.PTransform]):
        super().__init__()
        self._sources = sources

    def expand(self, pbegin):
        parts: dict[str, list] = {}
        for label, source in self._sources.items():
            for key, pcoll in (pbegin | label >> source).items():
                parts.setdefault(key, []).append(pcoll)
        for key in ("entries", "errors"):  # build() reads both, even when none came
            parts.setdefault(key, [pbegin | f"No{key.title()}" >> beam.Create([])])
        return {key: (pcolls[0] if len(pcolls) == 1
                      else pcolls | f"All{key.title()}" >> beam.Flatten())
                for key, pcolls in parts.items()}


def batch_source(config: IngestConfig, clock=None) -> beam.PTransform:
    """The source of a bounded run: the feeds once and/or the backfill file."""
    sources: dict[str, beam.PTransform] = {}
    if config.subscriptions.feeds or config.subscriptions.problems:
        sources["ReadFeedsOnce"] = ReadFeedsOnce(config.subscriptions, config.policy, clock)
    if config.articles:
        sources["ReadBackfillFile"] = ReadBackfillFile(config.articles, clock)
    return Sources(sources)


def build(pipeline: beam.Pipeline, config: IngestConfig,
          source: beam.PTransform | None = None, *, clock=None, across_windows: bool = False,
          launcher_publishes: bool = False, progress: str | None = None) -> dict:
    """Adds the ingestion transforms to ``pipeline``; returns the main PCollections.

    ``source`` is a PTransform applied to the pipeline that returns ``{"entries",
    "errors"}`` and optionally ``"duplicates"`` (entries a source already knows to be
    copies): :func:`batch_source` (the default), ``PollContinuously`` (the unbounded
    pipeline), or a watch cycle's ``CycleInput``.
    ``across_windows`` (the unbounded pipeline, whose source emits fixed windows):
    the story stage matches copies and echoes of earlier windows too.
    ``launcher_publishes`` (batch runs and watch cycles): the pipeline stops at staged
    files and the launcher publishes the run as one unit
    (:func:`transforms.sinks.publish.publish_run`); otherwise each table and window is
    published and committed inside the pipeline.
    ``progress``: a local folder where every worker process writes its running counts
    (:mod:`pipelines.progress`); None adds no counting step.
    """
    def tap(pcoll, what: str, label: str):
        return pcoll if progress is None else pcoll | label >> CountProgress(progress, what)

    source = source if source is not None else batch_source(config, clock)
    polled = pipeline | "Source" >> source
    entries = tap(polled["entries"], "entries", "ProgressEntries")
    source_errors = tap(polled["errors"], "source_errors", "ProgressSourceErrors")
    unique, duplicates = entries | "DropExactDuplicates" >> DropExactDuplicates(clock=clock)
    if "duplicates" in polled:
        duplicates = [duplicates, polled["duplicates"]] | "AllDuplicates" >> beam.Flatten()
    pages = unique | "FetchArticles" >> FetchArticles(config.policy, config.fetch_threads,
                                                      clock=clock,
                                                      credentials=config.credentials)
    page_errors = tap(pages.errors, "pages_failed", "ProgressPageErrors")
    articles = (tap(pages.articles, "pages_fetched", "ProgressPages")
                | "DetectLanguage" >> beam.ParDo(DetectLanguageFn()))
    if config.languages:
        # Articles in other languages end as one error record each (language_filtered).
        kept = articles | "FilterLanguages" >> beam.ParDo(
            FilterLanguagesFn(config.languages)).with_outputs("errors", main="articles")
        articles = kept.articles
        page_errors = (page_errors, kept.errors) | "WithLanguageErrors" >> beam.Flatten()
    articles = articles | "AssignTopic" >> beam.ParDo(
        AssignTopicFn(config.category_map, config.topic_threshold,
                      use_encoder=config.topic_encoder))
    # Story stage: exact and near copies are dropped, echoes share the first article's id.
    # The unbounded pipeline reads no seeds: their side input (this batch's time bounds)
    # is never ready for a global-window reader, which held every window back until the
    # job ended; its keyed state plays their part instead.
    stories = articles | "AssignStories" >> AssignStories(
        make_similarity(config.story_similarity), config.story_threshold,
        dt.timedelta(hours=config.story_window_hours), config.drop_echoes,
        existing=None if across_windows else config.output, run_id=config.run_id,
        clock=clock, across_windows=across_windows)
    articles = tap(stories.articles, "articles", "ProgressArticles")
    duplicates = tap((duplicates, stories.duplicates) | "WithStoryDuplicates" >> beam.Flatten(),
                     "duplicates", "ProgressDuplicates")
    errors = (source_errors, page_errors) | "AllErrors" >> beam.Flatten()
    out = config.output
    written = {
        # A bounded run is published as one unit by the launcher once the pipeline has
        # finished (pipelines.execute); the unbounded pipeline commits window by window.
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


