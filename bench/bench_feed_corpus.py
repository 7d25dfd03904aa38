"""The feed stage over feedparser's own test corpus (benchmark, not a test).

Reads ``../shared/corpora/feedparser-tests/feeds.tar.gz`` (or under ``$NEWSBEAM_SHARED``; exits
with a message when it is missing): about 2,100 well-formed and ill-formed RSS, Atom,
RDF and JSON feeds, odd encodings and entity tricks. Response headers that a test file
declares in its ``Header:`` comment lines are passed along, as feedparser's own test
harness does.

* ``parse`` (default): :func:`transforms.feeds.parse.parse_feed` on every file, in-process;
* ``stage``: every file served by the loopback test server and read by the real
  :class:`transforms.feeds.parse.ReadFeeds` stage in a Beam pipeline (DirectRunner).

Either way it prints how many files yielded entries, only entry-level error records
(items without a usable link: most test files exercise one element and omit links), a
feed-level error record (by reason), or nothing (a well-formed feed without items, which
is not an error); how many crashed (must be 0); and the slowest files.

Run::

    .venv/bin/python bench/bench_feed_corpus.py
    .venv/bin/python bench/bench_feed_corpus.py --mode stage
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import re
import sys
import tarfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import FeedSpec  # noqa: E402
from transforms.feeds.parse import parse_feed  # noqa: E402

CORPUS = (Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared"))
          / "corpora" / "feedparser-tests" / "feeds.tar.gz")
"""In ``../shared`` beside the repository, or under ``$NEWSBEAM_SHARED``."""
NOW = dt.datetime(2024, 11, 23, 12, 0, tzinfo=dt.UTC)
_HEADER = re.compile(rb"^\s*Header:\s*([A-Za-z-]+):\s*(.*?)\s*$", re.M)


def load(path: Path) -> list[tuple[str, bytes, dict[str, str]]]:
    """(name, bytes, declared headers) for every regular file in the archive."""
    out = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in _HEADER.findall(data[:4096])}
            out.append((member.name, data, headers))
    return out


def bench_parse(files) -> int:
    outcome: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    timings = []
    entries = problems = 0
    crashes = []
    start = time.monotonic()
    for name, data, headers in files:
        spec = FeedSpec(url=f"http://corpus.test/{name}")
        t = time.monotonic()
        try:
            parsed = parse_feed(data, headers, spec, NOW)
        except Exception:  # noqa: BLE001 - counting crashes is the point
            crashes.append((name, traceback.format_exc(limit=3)))
            continue
        timings.append((time.monotonic() - t, name))
        kinds[parsed.kind] += 1
        entries += len(parsed.entries)
        problems += len(parsed.problems)
        if parsed.entries:
            outcome["entries"] += 1
        elif parsed.bozo:
            outcome["feed error record"] += 1
            reasons[parsed.reason] += 1
            if parsed.reason != "malformed_feed":
                print(f"  {name}: {parsed.reason}: {parsed.bozo[:120]}")
        elif parsed.problems:
            outcome["entry error records"] += 1
        else:
            outcome["well-formed, no items"] += 1
    elapsed = time.monotonic() - start
    print(f"{len(files)} files in {elapsed:.1f} s ({elapsed / len(files) * 1000:.2f} ms/file)")
    for key in ("entries", "entry error records", "feed error record",
                "well-formed, no items"):
        print(f"  {key:<24} {outcome[key]:>5}")
    print(f"  error reasons: {dict(reasons)}")
    print(f"  kinds: {dict(kinds)}; entries {entries}, entry-level problems {problems}")
    print(f"  crashes: {len(crashes)}")
    for name, tb in crashes[:5]:
        print(f"    {name}\n{tb}")
    print("  slowest: " + ", ".join(f"{n} {s * 1000:.0f} ms" for s, n in sorted(timings)[-3:]))
    return 1 if crashes else 0


def bench_stage(files) -> int:
    import apache_beam as beam

    from pipelines.ingest import counters
    from tests.faults import FaultServer
    from transforms.feeds.parse import ReadFeeds
    from transforms.fetching.http import FetchPolicy

    with FaultServer() as server:
        specs = []
        for name, data, headers in files:
            path = "/c/" + name
            server.add(path, data, content_type=headers.get("content-type", "application/xml"))
            specs.append(FeedSpec(url=server.url("corpus.test", path)))
        policy = FetchPolicy(host_overrides=(("corpus.test", "127.0.0.1"),),
                             per_host_concurrency=8, per_host_delay=0.0, respect_robots=False)
        start = time.monotonic()
        pipeline = beam.Pipeline()
        out = pipeline | beam.Create(specs) | ReadFeeds(policy, threads=8)
        _ = out.errors | beam.Map(lambda r: None)
        result = pipeline.run()
        result.wait_until_finish()
        elapsed = time.monotonic() - start
    c = counters(result)
    print(f"{len(files)} feeds through ReadFeeds in {elapsed:.1f} s")
    ok, failed = c.get("feeds_fetched", 0), c.get("feeds_failed", 0)
    print(f"  feeds parsed {ok} (ill-formed but usable {c.get('feeds_ill_formed', 0)}, "
          f"JSON {c.get('feeds_json', 0)}), feeds failed {failed}: "
          + ", ".join(f"{k[len('feed_error_'):]} {v}" for k, v in sorted(c.items())
                      if k.startswith("feed_error_")))
    print(f"  entries read {c.get('entries_read', 0)}, rejected {c.get('entries_rejected', 0)}")
    print(f"  every feed accounted for: {ok + failed == len(files)}")
    return 0 if ok + failed == len(files) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["parse", "stage"], default="parse")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    if not args.corpus.exists():
        print(f"corpus not found: {args.corpus} (it lives in ../shared beside the project)")
        return 2
    print("command: .venv/bin/python bench/bench_feed_corpus.py " + " ".join(sys.argv[1:]))
    files = load(args.corpus)
    return bench_parse(files) if args.mode == "parse" else bench_stage(files)


if __name__ == "__main__":
    raise SystemExit(main())
