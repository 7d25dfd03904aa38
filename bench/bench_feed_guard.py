"""Time and memory of a billion-laughs feed, with the entity guard and without it.

The guard (:func:`transforms.feeds.parse.parse_feed`, which removes a DOCTYPE declaring
entities before parsing) is side by side with ``feedparser.parse`` on the same bytes, in
one process, each run ``--repeat`` times (best and median printed; the machine is
shared). ``tests/test_feeds.py`` asserts what does not depend on the machine (nothing
expands: peak memory under 5 MB); the seconds live here.

Run::

    .venv/bin/python bench/bench_feed_guard.py [--levels 9] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser  # noqa: E402

from schemas import FeedSpec  # noqa: E402
from transforms.feeds.parse import parse_feed  # noqa: E402

NOW = dt.datetime(2024, 11, 23, 12, 0, tzinfo=dt.UTC)
SPEC = FeedSpec(url="http://public.test/feed")


def laughs(levels: int) -> bytes:
    """An RSS feed whose title is ``10**levels`` copies of "lol" once entities expand."""
    decls = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels + 1)]
    return (f'<?xml version="1.0"?><!DOCTYPE rss [{"".join(decls)}]><rss version="2.0">'
            f"<channel><title>&lol{levels};</title><item><title>&lol{levels};</title>"
            f"<link>http://a.test/1</link></item></channel></rss>").encode()


def measure(parse, body: bytes) -> tuple[float, int]:
    """(seconds, peak traced bytes) of one parse."""
    tracemalloc.start()
    start = time.perf_counter()
    parse(body)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, default=9, help="entity levels (default 9)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    args = parser.parse_args(argv)
    body = laughs(args.levels)
    print(f"feed: {len(body)} bytes, {10 ** args.levels:,} laughs once expanded; "
          f"load average {os.getloadavg()[0]:.2f}")
    for name, parse in (("parse_feed (guard)", lambda b: parse_feed(b, {}, SPEC, NOW)),
                        ("feedparser.parse alone", feedparser.parse)):
        runs = [measure(parse, body) for _ in range(args.repeat)]
        secs = [s for s, _ in runs]
        peak = max(p for _, p in runs)
        print(f"  {name}: best {min(secs):.3f} s, median {statistics.median(secs):.3f} s, "
              f"peak {peak / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
