"""The options module on its own: defaults, one validate() for every mode, Beam's view of
the same options, the console options, and an entry layer without import circles."""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import logging
from pathlib import Path

import pytest

from pipelines import options as opts
from pipelines.cli import QuietBeam, split_console

ROOT = Path(__file__).resolve().parent.parent


def _values(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    for name in opts.WATCH_GROUPS:
        opts.GROUPS[name][1](parser)
    return parser.parse_args(list(argv))


def test_defaults_repeated_here_equal_the_transforms_own():
    from transforms.feeds.polling import DEFAULT_BACKOFF, DEFAULT_FORGET_AFTER, DEFAULT_MAX_BACKOFF
    from transforms.fetching.http import DEFAULT_CONTACT_URL, DEFAULT_USER_AGENT
    from transforms.sinks.lease import DEFAULT_LEASE_SECONDS, EXIT_BUSY
    from transforms.stories.similarity import SIMILARITIES
    from transforms.topics.classify import DEFAULT_THRESHOLD

    assert opts.DEFAULT_USER_AGENT == DEFAULT_USER_AGENT
    assert opts.DEFAULT_CONTACT_URL == DEFAULT_CONTACT_URL
    assert opts.DEFAULT_TOPIC_THRESHOLD == DEFAULT_THRESHOLD
    assert tuple(opts.SIMILARITIES) == tuple(SIMILARITIES)
    assert dt.timedelta(days=opts.DEFAULT_FORGET_AFTER_DAYS) == DEFAULT_FORGET_AFTER
    assert (opts.DEFAULT_BACKOFF, opts.DEFAULT_MAX_BACKOFF) == (DEFAULT_BACKOFF,
                                                                DEFAULT_MAX_BACKOFF)
    assert (opts.DEFAULT_LEASE_SECONDS, opts.EXIT_BUSY) == (DEFAULT_LEASE_SECONDS, EXIT_BUSY)


def test_every_help_text_states_its_default():
    parser = argparse.ArgumentParser()
    for name in opts.WATCH_GROUPS:
        opts.GROUPS[name][1](parser)
    for action in parser._actions:  # noqa: SLF001 - read-only walk
        if action.option_strings and action.dest != "help":
            assert "Default" in action.help or "Required" in action.help, action.dest


@pytest.mark.parametrize("argv, mode, problem", [
    (["--feeds", "u"], "ingest", "--output DIR is required"),
    (["--output", "o"], "ingest", "at least one --feeds"),
    (["--feeds", "u", "--output", "o", "--fetch-threads", "0"], "ingest", "--fetch-threads"),
    (["--feeds", "u", "--output", "o", "--topic-threshold", "2"], "ingest", "--topic-threshold"),
    (["--feeds", "u", "--output", "o", "--lock-wait", "-1"], "ingest", "--lock-wait"),
    (["--articles", "a.jsonl", "--output", "o"], "streaming", "one-off"),
    (["--feeds", "u", "--output", "o", "--poll-interval", "0"], "streaming", "--poll-interval"),
    (["--feeds", "u", "--output", "o", "--stop-after", "0"], "streaming", "--stop-after"),
    (["--feeds", "u", "--output", "o", "--cycles", "0"], "watch", "--cycles"),
    (["--feeds", "u", "--output", "gs://b/o"], "watch", "local folder"),
    (["--feeds", "u", "--output", "o", "--page-attempts", "0"], "watch", "--page-attempts"),
    (["--feeds", "u", "--output", "o", "--refetch"], "watch", "--refetch"),
    (["--feeds", "u", "--output", "o", "--refetch"], "streaming", "--refetch"),
])
def test_validate_names_the_option_at_fault(argv, mode, problem):
    problems = opts.validate(_values(*argv), mode)
    assert any(problem in p for p in problems), problems


def test_validate_accepts_good_lines_in_every_mode():
    values = _values("--feeds", "u", "--output", "o")
    assert [opts.validate(values, m) for m in opts.MODES] == [[], [], []]
    # Batch-only and watch-only rules stay in their modes.
    assert opts.validate(_values("--articles", "a", "--output", "o"), "ingest") == []
    assert opts.validate(_values("--feeds", "u", "--output", "o", "--refetch"), "ingest") == []
    assert opts.validate(_values("--feeds", "u", "--output", "gs://b/o"), "streaming") == []
    with pytest.raises(ValueError):
        opts.validate(values, "sometimes")


def test_beam_parses_the_same_options_and_validates_them():
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(["--feeds", "u", "--output", "o", "--fetch-threads", "0",
                               "--poll-interval", "30", "--runner", "FnApiRunner"])
    ingest = options.view_as(opts.IngestOptions)
    assert ingest.feeds == ["u"] and ingest.fetch_threads == 0
    assert options.view_as(opts.ContinuousOptions).poll_interval == 30
    assert ingest.validate() == ["--fetch-threads must be at least 1"]
    assert opts.IngestOptions is opts.IngestOptions  # created once
    assert opts.IngestOptions.__qualname__ == "IngestOptions"


def test_beam_knows_the_source_controls():
    from apache_beam.options.pipeline_options import PipelineOptions

    ingest = PipelineOptions(["--feeds", "u", "--output", "o", "--languages", "en,uk",
                              "--proxy", "", "--refetch"]).view_as(opts.IngestOptions)
    assert (ingest.languages, ingest.proxy, ingest.refetch) == ("en,uk", "", True)
    assert ingest.validate() == []


def test_console_options_come_out_of_any_position():
    console, rest = split_console(["ingest", "--feeds", "u", "-v", "--output", "o"])
    assert console.level == logging.INFO and rest == ["ingest", "--feeds", "u", "--output", "o"]
    assert split_console(["-vv", "watch"])[0].level == logging.DEBUG
    quiet, _ = split_console(["-q", "demo"])
    assert quiet.level == logging.ERROR and not quiet.progress
    assert split_console(["--log-level=info", "-q"])[0].level == logging.INFO
    default, _ = split_console(["ingest"])
    assert default.level == logging.WARNING and default.progress and default.quiet_beam


def test_quiet_console_drops_beam_notices_only():
    keep = QuietBeam().filter

    def record(name, level, message):
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    assert not keep(record("root", logging.WARNING, "apitools not found, and bigquery ..."))
    assert not keep(record("apache_beam.options", logging.WARNING,
                           "Discarding unparseable args: ['--x']"))
    assert not keep(record("apache_beam.runners.worker", logging.INFO, "Control channel"))
    assert keep(record("apache_beam.io.fileio", logging.WARNING,
                       "Some files may be left orphaned in the temporary folder"))
    assert keep(record("pipelines.watch", logging.WARNING, "recovered interrupted cycle"))


def _imports(path: Path) -> set[str]:
    """``pipelines.*`` modules imported anywhere in ``path`` except a ``__main__`` block."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pipelines":
                found.update(f"pipelines.{a.name}" for a in node.names)
            elif node.module.startswith("pipelines."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipelines."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_the_entry_layer_has_no_import_circle():
    modules = {}
    for path in (ROOT / "pipelines").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        modules[name] = {m for m in _imports(path) if m != name}
    # Depth-first search for a cycle over every import, function-level ones included.
    state: dict[str, int] = {}

    def walk(name, trail):
        state[name] = 1
        for dep in sorted(modules.get(name, ())):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, name, dep]))
            if dep in modules and not state.get(dep):
                walk(dep, [*trail, name])
        state[name] = 2

    for name in sorted(modules):
        if not state.get(name):
            walk(name, [])
    assert "pipelines.streaming" not in modules["pipelines.ingest"]
    assert "pipelines.watch" not in modules["pipelines.streaming"]
