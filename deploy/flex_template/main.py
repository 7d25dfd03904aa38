"""Dataflow Flex Template entry point for ``newsbeam ingest``.

The Flex Template launcher runs this file (``FLEX_TEMPLATE_PYTHON_PY_FILE``) on a
short-lived launcher VM with the template's parameters as ``--name=value`` arguments. It
builds the same pipeline as ``newsbeam ingest`` and submits it, then exits: the launcher
must not block on ``wait_until_finish`` (the job would never be reported as started), so
the end-of-run summary that ``newsbeam ingest`` prints is not produced here. Read the
output back afterwards instead, e.g. with DuckDB over ``OUTPUT/articles/**/*.parquet``.

With ``streaming=true`` the unbounded pipeline of ``ingest --streaming`` is submitted
instead (PeriodicImpulse polling every ``poll_interval`` seconds until the job is drained
or cancelled).

Template parameter names may only use letters, digits and underscores, while some
``newsbeam`` options are spelled with hyphens and some are on/off flags;
:func:`flex_args` translates ``--fetch_threads=4`` to ``--fetch-threads=4`` and
``--allow_private_network=true`` to ``--allow-private-network``.

Run it locally the way the launcher does (DirectRunner, waits because that runner does)::

    python deploy/flex_template/main.py --feeds=https://example.org/rss --output=/tmp/out
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Sequence

import apache_beam as beam

from pipelines import options as newsbeam_options
from pipelines.ingest import parse_args
from pipelines.options import ContinuousOptions
from pipelines.stages import build
from pipelines.streaming import build_streaming

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def _ingest_parser() -> argparse.ArgumentParser:
    """The options a template parameter may name: newsbeam's own and ``--streaming``."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in newsbeam_options.WATCH_GROUPS:
        newsbeam_options.GROUPS[name][1](parser)
    parser.add_argument("--streaming", action="store_true")
    return parser


def flex_args(argv: Sequence[str]) -> list[str]:
    """Rewrites template-style ``--name_with_underscores=value`` arguments for ``ingest``.

    Only ``newsbeam``'s own options are touched; Beam options (``--sdk_container_image``,
    ``--max_num_workers``...) pass through unchanged. Raises ValueError for a flag whose
    value is not a recognisable boolean.
    """
    spelled: dict[str, str] = {}
    flags: set[str] = set()
    for action in _ingest_parser()._actions:  # noqa: SLF001 - read-only walk
        for option in action.option_strings:
            spelled[option.replace("-", "_").replace("__", "--", 1)] = option
            if action.nargs == 0:
                flags.add(option)
    out: list[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        option = spelled.get(name, name)
        if option in flags and eq:
            if value.strip().lower() in _TRUE:
                out.append(option)
            elif value.strip().lower() not in _FALSE:
                raise ValueError(f"{name} expects true or false, got {value!r}")
            continue
        out.append(option + eq + value if option != name else arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Builds the ingestion pipeline from template parameters and submits it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = flex_args(list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        raise SystemExit(f"newsbeam flex template: {e}") from e
    streaming = "--streaming" in args
    # The same parsing and validation as newsbeam ingest (pipelines.options.validate).
    config, options = parse_args(args, mode="streaming" if streaming else "ingest",
                                 command="newsbeam flex template")
    pipeline = beam.Pipeline(options=options)
    if streaming:
        continuous = options.view_as(ContinuousOptions)
        start = time.time()
        stop = start + continuous.stop_after if continuous.stop_after is not None else None
        build_streaming(pipeline, config, continuous.poll_interval, start, stop,
                        dt.timedelta(days=continuous.forget_after_days),
                        continuous.feed_backoff)
    else:
        build(pipeline, config)
    result = pipeline.run()
    logging.getLogger(__name__).info("submitted run %s (state %s)", config.run_id,
                                     result.state)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
