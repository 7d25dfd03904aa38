"""What ``newsbeam report`` and the ``stories`` view cost.

Two measurements, each printed with the command's own wall time:

* ``--demo DIR``: ``newsbeam report DIR`` in a fresh process (imports included, as a user
  runs it), ``--repeat`` times, median and range; then, in this process, the parts:
  views created over the committed files, the queries, the plots and the page.
* ``--articles N`` (default 50,000): a generated output published through the real
  publish step (N articles in stories of 1 to 6 articles from 12 outlets in 5 languages
  over 30 days, N/20 duplicates, N/50 errors, in 10 runs), then the same parts, and
  ``SELECT count(*) FROM stories`` alone (median of 5): the price of deriving stories at
  read time instead of writing a table.

Run::

    newsbeam demo --output demo-output
    nice .venv/bin/python bench/bench_report.py --demo demo-output --articles 50000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUTLETS = [f"Outlet {i}" for i in range(12)]
LANGUAGES = ["en", "de", "uk", "ru", "fr"]
TOPICS = ["conflict-war-peace", "economy-business-finance", "sport", "politics-government",
          "society", "health"]


def generate(root: str, n: int, seed: int = 7) -> None:
    """Publishes a generated output of ``n`` articles at ``root`` through publish_run."""
    import pyarrow.parquet as pq

    from schemas import (
        ARTICLE_SCHEMA,
        DUPLICATE_SCHEMA,
        ERROR_SCHEMA,
        SCHEMA_VERSION,
        Article,
        DuplicateRecord,
        ErrorRecord,
    )
    from transforms.sinks import publish as pub
    from transforms.sinks.parquet import article_partition, date_partition, to_rows

    rnd = random.Random(seed)
    start = dt.datetime(2024, 11, 1, tzinfo=dt.UTC)
    articles, story, left = [], "", 0
    for i in range(n):
        aid = f"{i:016x}"
        if left == 0:
            story, left = aid, rnd.randint(1, 6)
        left -= 1
        when = start + dt.timedelta(minutes=rnd.randrange(30 * 24 * 60))
        articles.append(Article(
            article_id=aid, url=f"https://o.example/{aid}", feed_url="https://o.example/f",
            source=rnd.choice(OUTLETS), title=f"Title {i}", body="b", body_source="page",
            authors=[], published_at=when, fetched_at=when, language=rnd.choice(LANGUAGES),
            language_confidence=0.9, topic=rnd.choice(TOPICS), topic_code=None,
            topic_source="classifier", categories=[], content_hash=aid, story_id=story,
            is_story_lead=aid == story, story_similarity=None if aid == story else 0.7,
            date=when.strftime("%Y-%m-%d"), schema_version=SCHEMA_VERSION))
    dups = [DuplicateRecord(
        url=f"https://c.example/{i}", feed_url="f", article_id=f"d{i}",
        duplicate_of=rnd.choice(articles).article_id, level=rnd.choice(["url", "near",
                                                                         "content"]),
        similarity=0.9, title="t", detected_at=start, date="2024-11-30",
        schema_version=SCHEMA_VERSION, source=rnd.choice(OUTLETS), language="en")
        for i in range(n // 20)]
    errors = [ErrorRecord(
        url=f"https://e.example/{i}", feed_url="f", level="entry", stage="fetch_page",
        reason=rnd.choice(["http_404", "timeout", "robots_disallowed"]), message="m",
        http_status=None, attempts=1, occurred_at=start, date="2024-11-30",
        schema_version=SCHEMA_VERSION, source=None, language=None) for i in range(n // 50)]
    runs = 10
    for r in range(runs):
        run_id = f"bench{r:02d}"
        for table, rows, schema, part in (
                ("articles", articles[r::runs], ARTICLE_SCHEMA, article_partition),
                ("duplicates", dups[r::runs], DUPLICATE_SCHEMA, date_partition),
                ("errors", errors[r::runs], ERROR_SCHEMA, date_partition)):
            groups: dict[str, list] = {}
            for row in rows:
                groups.setdefault(part(row), []).append(row)
            files = []
            for partition, chunk in sorted(groups.items()):
                path = os.path.join(root, "_staging", run_id, f"{uuid.uuid4().hex}.parquet")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                pq.write_table(to_rows(chunk, schema), path, compression="zstd")
                files.append({"partition": partition, "path": path, "rows": len(chunk)})
            pub.write_json(os.path.join(root, "_staging", run_id,
                                        f"{table}-g{pub.STAGED_SUFFIX}"),
                           {"table": table, "window": "g", "files": files})
        pub.publish_run(root, run_id, skip_published=False)


def parts(root: str) -> dict[str, float]:
    """Seconds for each part of a report, in this process."""
    from pipelines import report as rep
    from pipelines import sql as nsql

    out = {}
    t0 = time.perf_counter()
    con = nsql.connect(root, load=rep.COLUMNS)
    out["tables read (as the report does)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = rep.figures(con)
    out["queries"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = rep.render_html(data, root, dt.datetime.now(dt.UTC))
    out["plots and page"] = time.perf_counter() - t0
    out["page bytes"] = len(page.encode())
    con = nsql.connect(root)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        n = con.sql("SELECT count(*) FROM stories").fetchone()[0]
        times.append(time.perf_counter() - t0)
    out["stories view over the files, count(*) (median of 5)"] = statistics.median(times)
    out["stories"] = n
    out["article files"] = len(nsql.committed_files(root, "articles"))
    out["articles"] = data["totals"]["articles"]
    return out


def show(title: str, figures: dict[str, float]) -> None:
    print(title)
    for k, v in figures.items():
        print(f"  {k:<40} {v:,.3f} s" if isinstance(v, float) else f"  {k:<40} {v:,}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", help="A demo output folder (newsbeam demo --output DIR).")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--articles", type=int, default=50_000)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})")
    if args.demo:
        walls = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pipelines.cli", "report", args.demo,
                                "--out", os.path.join(tmp, "r.html")], check=True,
                               cwd=ROOT, capture_output=True)
                walls.append(time.perf_counter() - t0)
        print(f"newsbeam report {args.demo}: median {statistics.median(walls):.2f} s "
              f"(min {min(walls):.2f}, max {max(walls):.2f}, {len(walls)} runs, fresh process "
              "each, imports included)")
        show("  parts, in this process (imports excluded: a first call pays them):",
             parts(args.demo))
        show("  again, warm:", parts(args.demo))
    if args.articles:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(tmp, args.articles)
            print(f"generated output of {args.articles:,} articles in "
                  f"{time.perf_counter() - t0:.1f} s")
            show(f"report parts over {args.articles:,} articles:", parts(tmp))
            from pipelines.compact import compact

            t0 = time.perf_counter()
            compact(tmp)
            print(f"newsbeam compact: {time.perf_counter() - t0:.1f} s")
            show("the same after compaction:", parts(tmp))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
