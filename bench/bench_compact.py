"""Cost of ``newsbeam compact`` and what concurrent readers see while it runs.

Generates an ``articles`` table the way continuous ingestion leaves it (many small files
per ``date=…/topic=…`` partition; bodies of about 1,500 characters drawn from a fixed
vocabulary with a fixed seed), then compacts it with :func:`pipelines.compact.compact`
while reader processes count the table again and again, and prints:

* files and bytes before and after, rows verified by compaction, seconds, rows/s: once on
  a copy of the table with nothing else running, once with the two readers below (which
  share the machine's cores with it);
* the time one full scan takes before and after (DuckDB, ``count(*)`` and the summed body
  length over every file; median of 5), i.e. what readers gain;
* for each reader (pyarrow dataset, DuckDB glob): how many counts it made during the
  compaction, the distinct counts seen (all must equal the full row count), and how many
  reads hit a stale listing (a file listed before a swap and gone when opened) and were
  retried, as the compaction module says readers must.

Exits 1 if a reader ever saw another count than the full row count, or compaction
verified fewer rows than were generated.

Run::

    .venv/bin/python bench/bench_compact.py                     # 600 files, 60,000 rows
    .venv/bin/python bench/bench_compact.py --files 600 --rows 60000 --target-size 4MB
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from pipelines import compact as compaction  # noqa: E402
from schemas import ARTICLE_SCHEMA, SCHEMA_VERSION, Article  # noqa: E402
from transforms.sinks.parquet import to_rows  # noqa: E402

DATES = ("2024-11-22", "2024-11-23")
TOPICS = ("politics", "business", "sport")
T0 = dt.datetime(2024, 11, 22, 6, 0, tzinfo=dt.UTC)
WORDS = ("council minister report market season river bridge hospital school league "
         "budget election harbour energy prices court trial village festival weather "
         "storm police museum railway airport farmers exports bank inflation coach "
         "players striker museum orchestra students teachers research clinic doctors "
         "parliament vote reform tax coalition protest border ceasefire talks summit").split()


def _body(rng: random.Random) -> str:
    sentences = []
    while sum(len(s) for s in sentences) < 1500:
        n = rng.randint(8, 18)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
    return " ".join(sentences)


def generate(root: Path, files: int, rows: int, seed: int = 7) -> int:
    """Writes ``files`` Parquet files holding ``rows`` articles over 6 partitions."""
    rng = random.Random(seed)
    parts = [(d, t) for d in DATES for t in TOPICS]
    per_file = rows // files
    n = 0
    for f in range(files):
        date, topic = parts[f % len(parts)]
        folder = root / "articles" / f"date={date}" / f"topic={topic}"
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for _ in range(per_file):
            aid = f"{n:016x}"
            when = T0 + dt.timedelta(seconds=37 * n)
            records.append(Article(
                article_id=aid, url=f"https://outlet{n % 40}.example/{date}/{aid}",
                feed_url=f"https://outlet{n % 40}.example/feed", source=f"Outlet {n % 40}",
                title=" ".join(rng.choice(WORDS) for _ in range(8)).capitalize(),
                body=_body(rng), body_source="page", authors=["Staff"], published_at=when,
                fetched_at=when, language="en", language_confidence=0.99, topic=topic,
                topic_code=None, topic_source="classifier", categories=[],
                content_hash=f"{n * 7919:016x}"[-16:], story_id=aid, is_story_lead=True,
                story_similarity=None, date=date, schema_version=SCHEMA_VERSION))
            n += 1
        # The names continuous ingestion gives: run, window start and end, sequence.
        start = int(T0.timestamp()) + 300 * f
        pq.write_table(to_rows(records, ARTICLE_SCHEMA),
                       folder / f"part-bench-{start}-{start + 300}-00000.parquet",
                       compression="zstd")
    return n


def table_files(root: Path) -> tuple[int, int]:
    paths = [p for p in (root / "articles").rglob("*.parquet")]
    return len(paths), sum(p.stat().st_size for p in paths)


def scan_seconds(root: Path, repeat: int = 5) -> tuple[float, int]:
    """A full DuckDB scan of the table (count and summed body length), each time in a new
    connection: median seconds of ``repeat`` scans, rows."""
    import duckdb

    glob = str(root / "articles" / "**" / "*.parquet")
    times = []
    for _ in range(repeat):
        con = duckdb.connect()
        t0 = time.perf_counter()
        rows, _ = con.execute("SELECT count(*), sum(length(body)) FROM "
                              f"read_parquet('{glob}', hive_partitioning = true)").fetchone()
        times.append(time.perf_counter() - t0)
        con.close()
    return statistics.median(times), rows


def reader(kind: str, root: str, stop: str, out: str) -> None:
    """Counts ``root/articles`` until ``stop`` exists; writes what it saw to ``out``."""
    counts: dict[int, int] = {}
    stale = 0
    if kind == "duckdb":
        import duckdb

        con = duckdb.connect()
        glob = os.path.join(root, "articles", "**", "*.parquet")

        def count() -> int:
            return con.execute("SELECT count(*) FROM read_parquet("
                               f"'{glob}', hive_partitioning = true)").fetchone()[0]
        missing: tuple[type[BaseException], ...] = (duckdb.IOException, FileNotFoundError)
    else:
        import pyarrow.dataset as ds

        def count() -> int:
            # Read a column (not just footers) so every listed file is really opened.
            return ds.dataset(os.path.join(root, "articles"), format="parquet",
                              partitioning="hive").to_table(columns=["article_id"]).num_rows
        missing = (FileNotFoundError, OSError)
    while not os.path.exists(stop):
        try:
            n = count()
        except missing:
            stale += 1  # listed before a swap, opened after it: read again
            continue
        counts[n] = counts.get(n, 0) + 1
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"kind": kind, "counts": counts, "stale": stale}, f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--target-size", default="4MB",
                        help="compaction target per output file (default 4MB: a few "
                             "files per partition at this size; the CLI default is 128MB)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = parser.parse_args(argv)
    target = compaction.parse_size(args.target_size)

    work = Path(tempfile.mkdtemp(prefix="bench-compact-"))
    try:
        t0 = time.perf_counter()
        rows = generate(work, args.files, args.rows)
        print(f"generated {rows:,} rows in {args.files} files over "
              f"{len(DATES) * len(TOPICS)} partitions in {time.perf_counter() - t0:.1f} s "
              f"({work})")
        files_before, bytes_before = table_files(work)
        scan_before, seen = scan_seconds(work)
        assert seen == rows, (seen, rows)

        alone = work / "alone"
        shutil.copytree(work / "articles", alone / "articles")
        t0 = time.perf_counter()
        quiet = compaction.compact(str(alone), target=target, tables=("articles",))
        quiet_seconds = time.perf_counter() - t0
        quiet_rows = sum(r.rows for r in quiet.results if r.status == "compacted")
        quiet_files, quiet_bytes = table_files(alone)
        print(f"compact alone, --target-size {args.target_size}: {files_before} files "
              f"({bytes_before / 1e6:.1f} MB) -> {quiet_files} files "
              f"({quiet_bytes / 1e6:.1f} MB); {quiet_rows:,} rows verified; "
              f"{quiet_seconds:.2f} s, {quiet_rows / quiet_seconds:,.0f} rows/s")

        ctx = mp.get_context("spawn")
        stop = str(work / "stop")
        outs = {kind: str(work / f"reader-{kind}.json") for kind in ("pyarrow", "duckdb")}
        readers = [ctx.Process(target=reader, args=(kind, str(work), stop, out))
                   for kind, out in outs.items()]
        for p in readers:
            p.start()
        time.sleep(2.0)  # the readers are importing and counting before compaction starts
        t0 = time.perf_counter()
        report = compaction.compact(str(work), target=target, tables=("articles",))
        seconds = time.perf_counter() - t0
        time.sleep(1.0)  # and after it
        Path(stop).touch()
        for p in readers:
            p.join(120)

        files_after, bytes_after = table_files(work)
        scan_after, seen_after = scan_seconds(work)
        verified = sum(r.rows for r in report.results if r.status == "compacted")
        print(f"compact with 2 readers: {files_before} files "
              f"({bytes_before / 1e6:.1f} MB) -> {files_after} files "
              f"({bytes_after / 1e6:.1f} MB); {verified:,} rows verified; "
              f"{seconds:.2f} s, {verified / seconds:,.0f} rows/s; "
              f"{len(report.failed)} partitions failed")
        print(f"full DuckDB scan (median of 5): {scan_before * 1000:.0f} ms before, "
              f"{scan_after * 1000:.0f} ms after ({seen_after:,} rows)")
        ok = (verified == rows == quiet_rows and seen_after == rows and not report.failed
              and not quiet.failed)
        for kind, out in outs.items():
            with open(out, encoding="utf-8") as f:
                seen_by = json.load(f)
            counts = {int(k): v for k, v in seen_by["counts"].items()}
            reads = sum(counts.values())
            print(f"reader {kind}: {reads} counts during the run, distinct values "
                  f"{sorted(counts)}, {seen_by['stale']} stale listings retried")
            ok = ok and reads > 0 and set(counts) == {rows}
        print("all reader counts equal the full row count" if ok else "MISMATCH")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
