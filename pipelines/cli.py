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
        from transforms.lease import EXIT_BUSY, LeaseBusy

        try:
            return run_demo(args.output, beam_args)
        except LeaseBusy as e:
            print(f"newsbeam demo: {e}", file=sys.stderr)
            return EXIT_BUSY
    print(f"newsbeam: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
