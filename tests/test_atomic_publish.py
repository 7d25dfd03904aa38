"""A run is published as a unit: intent log, commit manifest, roll-forward after a kill,
readers that follow the manifests (DuckDB, pyarrow), compaction that honours them."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import threading
import uuid

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines import compact as c
from schemas import ARTICLE_SCHEMA, SCHEMA_VERSION, Article
from transforms.sinks import publish as pub
from transforms.sinks.parquet import to_rows

T0 = dt.datetime(2024, 11, 23, 9, 0, tzinfo=dt.UTC)


def article(i: int, date: str = "2024-11-23", topic: str = "sport") -> Article:
    return Article(
        article_id=f"{i:016x}", url=f"https://example.org/{i}", feed_url="f", source="S",
        title=f"Title {i}", body=f"Body {i}", body_source="page", authors=[],
        published_at=T0, fetched_at=T0, language="en", language_confidence=0.9, topic=topic,
        topic_code=None, topic_source="feed", categories=[], content_hash=f"{i:016x}",
        story_id=f"{i:016x}", is_story_lead=True, story_similarity=None, date=date,
        schema_version=SCHEMA_VERSION)


def stage(root: str, run_id: str, ids: list[int], per_file: int = 2) -> None:
    """Leaves staged files and their list as a finished pipeline does."""
    files = []
    for k in range(0, len(ids), per_file):
        chunk = [article(i, date=f"2024-11-2{i % 3 + 1}") for i in ids[k:k + per_file]]
        for date in sorted({a.date for a in chunk}):
            rows = [a for a in chunk if a.date == date]
            path = os.path.join(root, "_staging", run_id, f"{uuid.uuid4().hex}.parquet")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pq.write_table(to_rows(rows, ARTICLE_SCHEMA), path)
            files.append({"partition": f"date={date}/topic=sport", "path": path,
                          "rows": len(rows)})
    pub.write_json(os.path.join(root, "_staging", run_id, f"articles-g{pub.STAGED_SUFFIX}"),
                   {"table": "articles", "window": "g", "files": files})


class Killed(Exception):
    pass


def kill_at(step: str, after: int = 0):
    seen = {"n": 0}

    def pause(name: str) -> None:
        if name == step:
            if seen["n"] >= after:
                raise Killed(name)
            seen["n"] += 1
    return pause


def committed_ids(root: str) -> list[str]:
    files = pub.committed_files(root, "articles")
    if not files:
        return []
    return sorted(pq.ParquetDataset(files).read(columns=["article_id"])
                  .column("article_id").to_pylist())


def glob_ids(root: str) -> list[str]:
    files = glob.glob(f"{root}/articles/**/*.parquet", recursive=True)
    return sorted(i for f in files for i in pq.read_table(f).column("article_id").to_pylist())


def test_publish_commits_with_a_manifest(tmp_path):
    root = str(tmp_path)
    stage(root, "r1", list(range(7)))
    manifest = pub.publish_run(root, "r1")
    assert manifest.rows("articles") == 7
    assert committed_ids(root) == glob_ids(root) == [f"{i:016x}" for i in range(7)]
    assert not os.path.exists(os.path.join(root, "_staging"))
    assert not glob.glob(f"{root}/_runs/*.intent.json")
    # Publishing again (a retried launcher) changes nothing.
    assert pub.publish_run(root, "r1").files == manifest.files
    assert len(glob_ids(root)) == 7


@pytest.mark.parametrize("step,after", [("before_intent", 0), ("rename", 0), ("rename", 2),
                                        ("before_commit", 0), ("after_commit", 0)])
def test_killed_publish_is_all_or_nothing_then_rolled_forward(tmp_path, step, after):
    root = str(tmp_path)
    stage(root, "r0", [100, 101])
    pub.publish_run(root, "r0")
    stage(root, "r1", list(range(7)))
    with pytest.raises(Killed):
        pub.publish_run(root, "r1", pause=kill_at(step, after))
    old = [f"{i:016x}" for i in (100, 101)]
    new = [f"{i:016x}" for i in range(7)]
    visible = committed_ids(root)
    if step == "after_commit":
        assert visible == sorted(old + new)  # committed: only the clean-up was cut short
    else:
        assert visible == old  # none of the killed run, whatever a glob shows
    if step == "rename" and after:
        assert len(glob_ids(root)) == len(old) + after  # what a plain glob would have seen
    report = pub.recover(root)
    if step == "before_intent":
        assert report.staging_removed == ["r1"] and not report.rolled_forward
        assert committed_ids(root) == glob_ids(root) == old  # rolled back
    else:
        if step != "after_commit":
            assert report.rolled_forward == ["r1"]
        assert committed_ids(root) == glob_ids(root) == sorted(old + new)
    assert not os.path.exists(os.path.join(root, "_staging"))
    assert not glob.glob(f"{root}/_runs/*.intent.json")
    assert not pub.recover(root)  # nothing left to do


def test_files_no_manifest_names_are_moved_aside(tmp_path):
    root = str(tmp_path)
    stage(root, "r1", [1, 2])
    pub.publish_run(root, "r1")
    stray = tmp_path / "articles" / "date=2024-11-22" / "topic=sport" / "part-x-g-00000.parquet"
    pq.write_table(to_rows([article(9)], ARTICLE_SCHEMA), stray)
    assert len(glob_ids(root)) == 3 and len(committed_ids(root)) == 2
    report = pub.recover(root)
    assert report.uncommitted == ["articles/date=2024-11-22/topic=sport/part-x-g-00000.parquet"]
    assert len(glob_ids(root)) == 2 and (tmp_path / "_uncommitted").is_dir()


def test_an_output_without_manifests_is_adopted_once(tmp_path):
    root = str(tmp_path)
    folder = tmp_path / "articles" / "date=2024-11-23" / "topic=sport"
    folder.mkdir(parents=True)
    pq.write_table(to_rows([article(1), article(2)], ARTICLE_SCHEMA), folder / "part-old.parquet")
    assert committed_ids(root) == []
    assert pub.recover(root).adopted == 1
    assert len(committed_ids(root)) == 2
    assert not pub.recover(root)


# -- readers ------------------------------------------------------------------------------

def committed(out: str, table: str) -> list[str]:
    """The README's reader recipe, without newsbeam: files of committed runs only."""
    while True:
        runs = sorted(p for p in glob.glob(f"{out}/_runs/*.json")
                      if not p.endswith(".intent.json"))
        named = set()
        for p in runs:
            with open(p) as f:
                named.update(rel for rel, _ in json.load(f)["tables"].get(table, []))
        files = sorted(f"{out}/{rel}" for rel in named if os.path.exists(f"{out}/{rel}"))
        if runs == sorted(p for p in glob.glob(f"{out}/_runs/*.json")
                          if not p.endswith(".intent.json")):
            return files


def test_readers_duckdb_and_pyarrow_see_committed_runs_only(tmp_path):
    out = str(tmp_path)
    stage(out, "r1", list(range(5)))
    pub.publish_run(out, "r1")
    stage(out, "r2", list(range(5, 9)))
    with pytest.raises(Killed):
        pub.publish_run(out, "r2", pause=kill_at("rename", 1))
    files = committed(out, "articles")
    assert files == pub.committed_files(out, "articles")
    # DuckDB: pass the list, keep the partition columns.
    n, dates = duckdb.sql(
        f"SELECT count(*), count(DISTINCT date) FROM read_parquet({files!r}, "
        "hive_partitioning=true)").fetchone()
    assert (n, dates) == (5, 3)
    # pyarrow: a dataset over the files, partitions read from the paths.
    table = ds.dataset(files, format="parquet", partitioning="hive",
                       partition_base_dir=f"{out}/articles").to_table()
    assert table.num_rows == 5 and set(table.column("topic").to_pylist()) == {"sport"}
    # A plain glob sees the half-published run too: that is what the manifests prevent.
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/articles/**/*.parquet')"
                      ).fetchone()[0] == 6


def test_a_reader_never_sees_part_of_a_run_while_runs_publish(tmp_path):
    root = str(tmp_path)
    runs, size = 12, 6
    for r in range(runs):
        stage(root, f"r{r:02d}", list(range(r * size, (r + 1) * size)), per_file=1)
    counts = []
    done = threading.Event()

    def writer():
        for r in range(runs):
            pub.publish_run(root, f"r{r:02d}")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    for _ in range(100_000):  # bounded; ends when the writer is done
        counts.append(len(committed_ids(root)))
        if done.is_set():
            break
    t.join()
    counts.append(len(committed_ids(root)))
    assert all(n % size == 0 for n in counts), sorted(set(counts))
    assert counts[-1] == runs * size


def test_compaction_merges_committed_files_and_readers_keep_every_row(tmp_path):
    root = str(tmp_path)
    for r in range(3):
        stage(root, f"r{r}", list(range(r * 10, r * 10 + 10)), per_file=1)
        pub.publish_run(root, f"r{r}")
    before = committed_ids(root)
    report = c.compact(root, target=1 << 30)
    assert report.results and not report.failed
    assert committed_ids(root) == glob_ids(root) == before
    assert glob.glob(f"{root}/_runs/compact-*.json")


@pytest.mark.slow
def test_reader_spark_sees_committed_runs_only(tmp_path):
    from pyspark.sql import SparkSession

    out = str(tmp_path)
    stage(out, "r1", list(range(5)))
    pub.publish_run(out, "r1")
    stage(out, "r2", list(range(5, 9)))
    with pytest.raises(Killed):
        pub.publish_run(out, "r2", pause=kill_at("rename", 1))
    files = committed(out, "articles")
    spark = (SparkSession.builder.master("local[1]").appName("newsbeam-reader-test")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.host", "127.0.0.1").getOrCreate())
    try:
        df = spark.read.option("basePath", f"{out}/articles").parquet(*files)
        got = sorted((r["article_id"], str(r["date"]), r["topic"]) for r in
                     df.select("article_id", "date", "topic").collect())
        # A plain read of the folder would include the half-published run's file.
        plain = spark.read.parquet(f"{out}/articles").count()
    finally:
        spark.stop()
    assert [g[0] for g in got] == [f"{i:016x}" for i in range(5)]
    assert {g[2] for g in got} == {"sport"} and {g[1] for g in got} == {
        "2024-11-21", "2024-11-22", "2024-11-23"}
    assert plain == 6
