"""What does a re-run of the demo over its own output fetch and add?

Serves the demo corpus on 127.0.0.1, runs the demo's ingest into a fresh folder, then
runs it again into the same folder (a remembering batch run, then one with
``--refetch``, which reads everything again), and prints for each run the requests the
server saw (feeds answered 200 or 304, article pages) and the rows each table gained::

    nice .venv/bin/python bench/bench_rerun.py
    nice .venv/bin/python bench/bench_rerun.py --similarity multilingual

The targets of issue 16: the remembering re-run fetches 0 pages and adds 0 rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.demo.run import demo_feeds_file  # noqa: E402
from pipelines.demo.server import SiteServer  # noqa: E402
from pipelines.ingest import run  # noqa: E402
from transforms.sinks.publish import TABLES  # noqa: E402


def table_rows(out: Path) -> dict[str, int]:
    """Rows readable in each table (a plain Hive-partitioned read, as a user would)."""
    counts = {}
    for table in TABLES:
        folder = out / table
        counts[table] = (ds.dataset(str(folder), format="parquet", partitioning="hive")
                         .count_rows() if folder.exists() else 0)
    return counts


def requests_by_kind(server: SiteServer) -> dict[str, int]:
    """The server's logged requests since the last clear: feeds by status, pages, robots."""
    kinds = {"feeds 200": 0, "feeds 304": 0, "pages": 0, "robots.txt": 0}
    for record in list(server.requests):
        path = record.path.split("?", 1)[0]
        if path.endswith("/robots.txt"):
            kinds["robots.txt"] += 1
        elif path.endswith((".xml", ".json", ".rss", ".atom")):
            kinds["feeds 304" if record.status == 304 else "feeds 200"] += 1
        else:
            kinds["pages"] += 1
    return kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--similarity", default="lexical",
                        help="--story-similarity of the runs. Default: lexical.")
    args = parser.parse_args()
    with SiteServer() as server, tempfile.TemporaryDirectory(prefix="bench-rerun-") as tmp:
        feeds = demo_feeds_file(server.base_url, tmp)
        out = Path(tmp) / "out"
        argv = ["--feeds", feeds, "--output", str(out), "--allow-private-network",
                "--per-host-delay", "0.05", "--story-similarity", args.similarity]
        before = table_rows(out)
        for label, extra in (("first run", []), ("re-run", []),
                             ("re-run --refetch", ["--refetch"])):
            server.clear_requests()
            t0 = time.monotonic()
            _, summary = run([*argv, *extra], quiet=True)
            took = time.monotonic() - t0
            after = table_rows(out)
            seen = requests_by_kind(server)
            added = {t: after[t] - before[t] for t in TABLES}
            print(f"{label:<17} pages fetched {seen['pages']:>3}; feeds {seen['feeds 200']} "
                  f"fetched, {seen['feeds 304']} not modified; robots.txt {seen['robots.txt']}; "
                  f"rows added: " + ", ".join(f"{t} {n}" for t, n in added.items())
                  + f"; rows added in all {sum(added.values())}; "
                  f"accounting {'OK' if summary.balanced else 'MISMATCH'}; {took:.1f} s")
            before = after
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
