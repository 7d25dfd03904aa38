"""The ``newsbeam`` command.

Subcommands::

    newsbeam ingest --feeds SOURCE [...] --output DIR [Beam options]
    newsbeam demo [--output DIR]
    newsbeam watch --feeds SOURCE [...] --output DIR [--poll-interval N] [--cycles K]
    newsbeam compact DIR [--date YYYY-MM-DD] [--target-size BYTES]
    newsbeam --version

``demo`` and ``watch`` accept the options of ``ingest`` too (e.g. ``--topic-encoder``,
``--story-similarity``; ``IngestOptions`` in ``pipelines/ingest.py`` lists them).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence


def version() -> str:
    """The installed distribution's version, or ``unknown`` when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("newsbeam")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatches to a subcommand; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"newsbeam {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "ingest":
        from pipelines.ingest import main as ingest_main

        return ingest_main(rest)
    if command == "watch":
        from pipelines.watch import main as watch_main

        return watch_main(rest)
    if command == "compact":
        from pipelines.compact import main as compact_main

        return compact_main(rest)
    if command == "demo":
        from pipelines.demo.run import run_demo

        parser = argparse.ArgumentParser(
            prog="newsbeam demo",
            epilog="Any other option goes to the pipeline: the options of newsbeam ingest "
                   "(e.g. --topic-encoder) and Beam's.")
        parser.add_argument("--output", default="demo-output",
                            help="Output folder. Default: ./demo-output.")
        args, beam_args = parser.parse_known_args(rest)
        from transforms.sinks.lease import EXIT_BUSY, LeaseBusy

        try:
            return run_demo(args.output, beam_args)
        except LeaseBusy as e:
            print(f"newsbeam demo: {e}", file=sys.stderr)
            return EXIT_BUSY
    print(f"newsbeam: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


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
