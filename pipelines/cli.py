"""The ``newsbeam`` command: subcommands, console, exit codes.

::

    newsbeam ingest --feeds SOURCE [...] --output DIR [options] [Beam options]
    newsbeam watch --feeds SOURCE [...] --output DIR [--poll-interval N] [--cycles K]
    newsbeam demo [--output DIR]
    newsbeam compact DIR [--date YYYY-MM-DD] [--target-size BYTES]
    newsbeam sql DIR [-c QUERY | -f FILE.sql | --views]
    newsbeam report DIR [--out report.html]
    newsbeam COMMAND --help        # the command's options, by group
    newsbeam --version

Subcommands are rows of :data:`COMMANDS`. A row with ``groups`` gets its ``--help`` and
its argument checking from :mod:`pipelines.options` here, before anything heavy is
imported (``--help`` does not import Apache Beam); a row without them hands its
arguments to ``main(argv)`` of its module, which parses them itself. Adding a command is
one row.

Mode dispatch happens here only: ``ingest`` runs a batch (:mod:`pipelines.ingest`), or with
``--streaming`` the unbounded pipeline (:mod:`pipelines.streaming`), which on a local runner
without ``--stop-after`` is the watch loop (:mod:`pipelines.watch`).

Exit codes (:data:`EXIT_CODES`): 0 the run's accounting closes; 1 it does not, or the run
failed; 2 the command line cannot run (nothing fetched or written); 3 nothing came
through (errors were written but no article or duplicate: e.g. every feed failed); 75
another run holds the output folder; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines import options as opts
from pipelines.options import Console

EXIT_CODES = {
    0: "ok: the run finished and its accounting closes",
    1: "the accounting does not close, or the run failed (a traceback says why)",
    2: "bad usage: the command line cannot run; nothing was fetched or written",
    3: "nothing came through: errors were written but no article or duplicate "
       "(e.g. every feed failed, or private addresses without --allow-private-network)",
    75: "another run holds the output folder (see --lock-wait)",
    130: "interrupted (a second Ctrl-C abandoned a watch cycle)",
}


@dataclass(frozen=True)
class Command:
    """One subcommand: ``target`` is ``module:function``.

    With ``groups`` (names in :data:`pipelines.options.GROUPS`) or ``arguments`` (a
    function adding arguments), the CLI builds the command's parser and calls
    ``function(argv, console)`` once the line parses; ``beam=True`` lets unknown options
    through to Beam. Without either, ``function(argv)`` gets the arguments as they are.
    """

    name: str
    summary: str
    target: str
    groups: tuple[str, ...] = ()
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    beam: bool = False
    output_required: bool = True

    @property
    def parses_here(self) -> bool:
        return bool(self.groups) or self.arguments is not None

    def load(self) -> Callable[..., int]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(output="demo-output")


COMMANDS: list[Command] = [
    Command("ingest", "Read feeds (or a backfill file) once into Parquet; with --streaming, "
            "poll them continuously.", "pipelines.cli:run_ingest",
            groups=opts.WATCH_GROUPS, beam=True),
    Command("watch", "Poll feeds on this machine, publishing every cycle, until stopped.",
            "pipelines.cli:run_watch", groups=opts.WATCH_GROUPS, beam=True),
    Command("demo", "Serve the bundled demo corpus on 127.0.0.1 and ingest it "
            "(default output: ./demo-output).", "pipelines.cli:run_demo",
            groups=("fetching", "stories", "topics", "output"), arguments=_demo_arguments,
            beam=True, output_required=False),
    Command("compact", "Rewrite each partition's small Parquet files into a few large ones.",
            "pipelines.compact:main", arguments=opts.add_compact_arguments),
    Command("sql", "Query a committed output with DuckDB: views over articles, duplicates, "
            "errors and stories.", "pipelines.sql:main"),
    Command("report", "Write a self-contained HTML report of a committed output.",
            "pipelines.report:main"),
]
"""The subcommands, in ``--help`` order."""


def version() -> str:
    """The installed distribution's version, or ``unknown`` when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("newsbeam")
    except PackageNotFoundError:
        return "unknown"


def _add_console_arguments(parser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("console")
    group.add_argument("-v", "--verbose", action="count", default=default if suppress else 0,
                       help="More log lines: -v shows INFO (Beam's included), -vv DEBUG.")
    group.add_argument("-q", "--quiet", action="store_true",
                       default=default if suppress else False,
                       help="Errors only, and no progress line; the run summary is still "
                            "printed.")
    group.add_argument("--log-level", dest="log_level", default=default,
                       choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                       type=str.upper,
                       help="Log level of the console (overrides -v/-q). Default: WARNING, "
                            "without Beam's start-up notices.")


_CONSOLE_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet"}


def split_console(argv: Sequence[str]) -> tuple[Console, list[str]]:
    """Takes the console options out of ``argv`` (they may come anywhere)."""
    verbose, quiet, level, rest = 0, False, None, []
    items = iter(argv)
    for arg in items:
        if arg in ("-v", "--verbose"):
            verbose += 1
        elif arg in ("-vv", "-vvv"):
            verbose += len(arg) - 1
        elif arg in ("-q", "--quiet"):
            quiet = True
        elif arg == "--log-level":
            level = next(items, None)
            if level is None:
                raise _usage("--log-level needs a value")
        elif arg.startswith("--log-level="):
            level = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if level is not None:
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise _usage(f"--log-level: unknown level {level!r}")
    elif quiet:
        number = logging.ERROR
    else:
        number = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    return Console(level=number, quiet=quiet), rest


def _usage(message: str) -> SystemExit:
    print(f"newsbeam: {message}", file=sys.stderr)
    return SystemExit(2)


class QuietBeam(logging.Filter):
    """Keeps Beam's start-up notices off a console at its default level: the
    ``apitools not found`` warning (the gcp extra is optional), "Discarding unparseable
    args" (worker processes parse the options without newsbeam's), and the INFO lines of
    local runners and SDK workers. Anything else at WARNING or above still shows."""

    NOISE = ("apitools not found", "Discarding unparseable args",
             "Discarding invalid overrides")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage() if record.args else str(record.msg)
        if any(n in message for n in self.NOISE):
            return False
        return not (record.levelno < logging.WARNING and record.name.startswith("apache_beam"))


def configure_logging(console: Console) -> None:
    """One stderr handler on the root logger at the console's level."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Ours from an earlier call, and the one logging adds by itself when a library
        # logs at import time before any handler exists (``python -m pipelines.ingest``
        # imports Beam first): either would print every line a second time.
        implicit = (type(handler) is logging.StreamHandler
                    and handler.stream in (sys.stderr, sys.__stderr__)
                    and handler.formatter is not None
                    and handler.formatter._fmt == logging.BASIC_FORMAT)  # noqa: SLF001
        if getattr(handler, "newsbeam_console", False) or implicit:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.newsbeam_console = True
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if console.level >= logging.WARNING:
        handler.addFilter(QuietBeam())
    root.addHandler(handler)
    root.setLevel(console.level)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with a subparser per command (nothing heavy imported)."""
    top = argparse.ArgumentParser(
        prog="newsbeam",
        description="News ingestion on Apache Beam: feeds → articles, languages, topics, "
                    "stories → Hive-partitioned Parquet.",
        epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())
               + ". Run 'newsbeam COMMAND --help' for a command's options.",
        allow_abbrev=False)
    top.add_argument("-V", "--version", action="version", version=f"newsbeam {version()}")
    _add_console_arguments(top)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        parser = sub.add_parser(
            command.name, help=command.summary, description=command.summary,
            allow_abbrev=False, add_help=command.parses_here)
        opts.add_groups(parser, command.groups, command.output_required, beam=command.beam)
        if command.arguments is not None:
            command.arguments(parser)
        if command.parses_here:
            _add_console_arguments(parser, suppress=True)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the command line and runs the command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    by_name = {c.name: c for c in COMMANDS}
    # A command that parses its own arguments gets them untouched, console options
    # before its name aside.
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    head = argv[:at]
    if at < len(argv) and argv[at] in by_name and not by_name[argv[at]].parses_here:
        console, head = split_console(head)
        if head:
            raise _usage(f"unknown option {head[0]}")
        configure_logging(console)
        return by_name[argv[at]].load()(argv[at + 1:])
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    console, rest = split_console(argv)
    args, extra = parser.parse_known_args(rest)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    command = by_name[args.command]
    sub_argv = rest[rest.index(args.command) + 1:]
    if extra and not command.beam:
        parser.error(f"{command.name}: unrecognized arguments: {' '.join(extra)}")
    configure_logging(console)
    return command.load()(sub_argv, console)


def _busy(command: str, error: Exception) -> int:
    print(f"newsbeam {command}: {error}", file=sys.stderr)
    return opts.EXIT_BUSY


def run_ingest(argv: list[str], console: Console) -> int:
    """``newsbeam ingest``: a batch run, or with ``--streaming`` a continuous one."""
    from pipelines.execute import LeaseLost, exit_code
    from transforms.sinks.lease import LeaseBusy

    try:
        if "--streaming" in argv:
            from pipelines.streaming import LOCAL_STREAMING_NOTE, wants_watch

            if wants_watch(argv):
                print(LOCAL_STREAMING_NOTE, file=sys.stderr, flush=True)
                from pipelines.watch import main as watch_main

                return watch_main(argv, console=console,
                                  command="newsbeam ingest --streaming")
            from pipelines.streaming import run

            _, summary = run(argv, console=console)
        else:
            from pipelines.ingest import run

            _, summary = run(argv, console=console)
    except (LeaseBusy, LeaseLost) as e:
        return _busy("ingest", e)
    return exit_code(summary)


def run_watch(argv: list[str], console: Console) -> int:
    """``newsbeam watch``."""
    from pipelines.watch import main as watch_main

    return watch_main(argv, console=console)


def run_demo(argv: list[str], console: Console) -> int:
    """``newsbeam demo``: the bundled corpus through ``ingest`` over loopback."""
    from pipelines.demo.run import run_demo as demo
    from pipelines.execute import LeaseLost
    from transforms.sinks.lease import LeaseBusy

    output, rest = "demo-output", []
    items = iter(argv)
    for arg in items:
        if arg == "--output":
            output = next(items, output)
        elif arg.startswith("--output="):
            output = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    try:
        return demo(output, rest, console=console)
    except (LeaseBusy, LeaseLost) as e:
        return _busy("demo", e)


def console_main() -> None:
    """The console entry point: :func:`main`, then an exit that skips interpreter teardown.

    By the time a command returns, its output is published and its summary printed. What
    is left to do is only interpreter finalisation, and that is where a daemon thread of a
    library (gRPC's pollers, a C++ pool) can be torn down inside C++ code and abort the
    process (``terminate called without an active exception``, exit 134) after a run that
    succeeded. So the streams and log handlers are flushed and the process exits with the
    command's own code at once.
    """
    import os
    import threading

    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except Exception:  # noqa: BLE001 - a bug still shows its traceback and exits 1
        import traceback

        traceback.print_exc()
        code = 1
    left = [t.name for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive()]
    if left:
        logging.getLogger(__name__).debug("threads alive at exit: %s", ", ".join(left))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
