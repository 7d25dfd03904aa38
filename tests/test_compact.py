"""Compaction: planning, verification, atomic swap under a concurrent reader, recovery."""

from __future__ import annotations

import datetime as dt
import os
import threading

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines import compact as c
from schemas import ARTICLE_SCHEMA, ERROR_SCHEMA, SCHEMA_VERSION, Article
from transforms.sinks.parquet import to_rows
from transforms.util import error_record

T0 = dt.datetime(2024, 11, 23, 9, 0, tzinfo=dt.UTC)


def _article(i: int, date: str, topic: str) -> Article:
    return Article(
        article_id=f"{i:016x}", url=f"https://example.org/{date}/{topic}/{i}", feed_url="f",
        source="Example", title=f"Title {i}", body=f"Body number {i} " * 20, body_source="page",
        authors=["A. Writer"], published_at=T0 + dt.timedelta(minutes=i), fetched_at=T0,
        language="en", language_confidence=0.99, topic=topic, topic_code=None,
        topic_source="feed", categories=["x"], content_hash=f"{i:016x}", story_id=f"{i:016x}",
        is_story_lead=True, story_similarity=None, date=date, schema_version=SCHEMA_VERSION)


def _make_table(root, dates=("2024-11-22", "2024-11-23"), topics=("sport", "health"),
                files=12, rows=15) -> int:
    n = 0
    for date in dates:
        for topic in topics:
            folder = root / "articles" / f"date={date}" / f"topic={topic}"
            folder.mkdir(parents=True)
            for f in range(files):
                records = [_article(n + k, date, topic) for k in range(rows)]
                n += rows
                pq.write_table(to_rows(records, ARTICLE_SCHEMA),
                               folder / f"part-run{f:03d}-g-00000.parquet")
        errors = root / "errors" / f"date={date}"
        errors.mkdir(parents=True)
        for f in range(3):
            rec = error_record(f"https://x/{date}/{f}", "", "entry", "fetch_page", "http_404",
                               "gone", 404, 1, T0)
            pq.write_table(to_rows([rec], ERROR_SCHEMA), errors / f"part-e{f}-g-00000.parquet")
    return n


def _count(root) -> int:
    return ds.dataset(str(root / "articles"), format="parquet", partitioning="hive").count_rows()


def _ids(root) -> list[str]:
    t = ds.dataset(str(root / "articles"), format="parquet", partitioning="hive").to_table(
        columns=["article_id"])
    return sorted(t.column("article_id").to_pylist())


def test_parse_size():
    assert c.parse_size("134217728") == 128 * 1024 * 1024
    assert c.parse_size("128MB") == 128 * 1024 * 1024
    assert c.parse_size("64MiB") == 64 * 1024 * 1024
    assert c.parse_size("1.5g") == int(1.5 * 1024**3)
    with pytest.raises(ValueError):
        c.parse_size("lots")
    with pytest.raises(ValueError):
        c.parse_size("10")


def test_plan_groups_packs_in_order():
    files = [("a", 40), ("b", 40), ("c", 40), ("d", 200), ("e", 10)]
    assert c.plan_groups(files, 100) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert c.plan_groups(files, 1000) == [["a", "b", "c", "d", "e"]]
    assert c.plan_groups([], 100) == []


def test_digest_ignores_order_but_sees_content():
    rows = [_article(i, "2024-11-23", "sport") for i in range(5)]
    a, b, d = c.Digest(), c.Digest(), c.Digest()
    a.update(to_rows(rows, ARTICLE_SCHEMA))
    b.update(to_rows(rows[::-1], ARTICLE_SCHEMA))
    changed = [*rows[:4], _article(99, "2024-11-23", "sport")]
    d.update(to_rows(changed, ARTICLE_SCHEMA))
    assert (a.rows, a.total) == (b.rows, b.total)
    assert a.rows == d.rows and a.total != d.total


def test_compact_merges_and_keeps_every_row(tmp_path):
    total = _make_table(tmp_path)
    before = _ids(tmp_path)
    folder = tmp_path / "articles" / "date=2024-11-23" / "topic=sport"
    schema = pq.read_schema(folder / "part-run000-g-00000.parquet")
    report = c.compact(str(tmp_path))
    assert not report.failed
    assert _ids(tmp_path) == before and len(before) == total
    names = os.listdir(folder)
    assert len(names) == 1 and names[0].startswith("part-compact-")
    assert len(os.listdir(tmp_path / "errors" / "date=2024-11-22")) == 1
    # Schema (and its metadata) is kept; the work folder is gone.
    assert pq.read_schema(folder / names[0]).equals(schema, check_metadata=True)
    assert not (tmp_path / c.WORK_DIR).exists()
    # A second run has nothing to do.
    again = c.compact(str(tmp_path))
    assert {r.status for r in again.results} == {"skipped"}


def test_compact_one_date_with_small_target(tmp_path):
    _make_table(tmp_path, files=6)
    largest = max(s for _, s in c.data_files(
        str(tmp_path / "articles" / "date=2024-11-22" / "topic=sport")))
    report = c.compact(str(tmp_path), dates=["2024-11-22"], target=2 * largest)
    assert {r.partition.split("/")[0] for r in report.results} == {"date=2024-11-22"}
    assert len(os.listdir(tmp_path / "articles" / "date=2024-11-22" / "topic=sport")) == 3
    assert len(os.listdir(tmp_path / "articles" / "date=2024-11-23" / "topic=sport")) == 6


def test_mismatched_schemas_leave_partition_untouched(tmp_path):
    _make_table(tmp_path, dates=("2024-11-23",), topics=("sport",), files=3)
    folder = tmp_path / "articles" / "date=2024-11-23" / "topic=sport"
    pq.write_table(to_rows([_article(500, "2024-11-23", "sport")], ARTICLE_SCHEMA)
                   .drop_columns(["body"]), folder / "part-odd.parquet")
    before = sorted(os.listdir(folder))
    report = c.compact(str(tmp_path), tables=["articles"])
    assert [r.status for r in report.results] == ["failed"]
    assert "different schema" in report.results[0].message
    assert sorted(os.listdir(folder)) == before


def test_recover_rescues_strays_after_interrupted_swap(tmp_path):
    """Simulates a crash right after the swap: the old generation is still staged."""
    _make_table(tmp_path, dates=("2024-11-23",), topics=("sport",), files=4)
    live = tmp_path / "articles" / "date=2024-11-23" / "topic=sport"
    inputs = [n for n, _ in c.data_files(str(live))]
    work = tmp_path / c.WORK_DIR / "tok"
    staged = work / "articles" / "date=2024-11-23" / "topic=sport"
    staged.mkdir(parents=True)
    merged = pq.ParquetDataset(str(live)).read()
    pq.write_table(merged, staged / "part-compact-tok-00000.parquet")
    stray = to_rows([_article(900, "2024-11-23", "sport")], ARTICLE_SCHEMA)
    pq.write_table(stray, live / "part-late-g-00000.parquet")  # published after the listing
    c._write_json(str(work / "manifest.json"), {
        "table": "articles", "partition": "date=2024-11-23/topic=sport", "inputs": inputs,
        "outputs": ["part-compact-tok-00000.parquet"]})
    assert c.exchange(str(staged), str(live))
    assert c.recover(str(tmp_path)) == 1
    assert sorted(os.listdir(live)) == ["part-compact-tok-00000.parquet",
                                        "part-late-g-00000.parquet"]
    assert _count(tmp_path) == merged.num_rows + 1
    assert not work.exists()


def test_refuses_object_store_and_missing_folder(tmp_path):
    with pytest.raises(c.CompactError, match="local folder"):
        c.compact("gs://bucket/out")
    with pytest.raises(c.CompactError, match="no such folder"):
        c.compact(str(tmp_path / "nope"))
    assert c.main([str(tmp_path / "nope")]) == 2


def test_concurrent_readers_never_see_a_changed_count(tmp_path):
    """Readers loop (bounded) during compaction: every answer is the full row count."""
    total = _make_table(tmp_path, dates=("2024-11-21", "2024-11-22", "2024-11-23"),
                        topics=("sport", "health", "politics-government"), files=20, rows=5)
    done = threading.Event()
    seen: list[tuple[str, int]] = []
    stale: list[str] = []
    glob = str(tmp_path / "articles" / "**" / "*.parquet")

    def read_loop(kind: str) -> None:
        con = duckdb.connect() if kind == "duckdb" else None
        for _ in range(5000):  # bounded: ends on its own even if compaction hangs
            try:
                if con is not None:
                    n = con.execute(f"SELECT count(*) FROM read_parquet('{glob}', "
                                    "hive_partitioning=true)").fetchone()[0]
                else:
                    n = _count(tmp_path)
            except (FileNotFoundError, duckdb.IOException) as e:
                # A listing made before a swap names files that are gone after it: the
                # reader must list again. A wrong count would be the failure.
                stale.append(f"{kind}: {type(e).__name__}")
                continue
            seen.append((kind, n))
            if done.is_set():
                break

    readers = [threading.Thread(target=read_loop, args=(k,)) for k in ("pyarrow", "duckdb")]
    for r in readers:
        r.start()
    report = c.compact(str(tmp_path))
    done.set()
    for r in readers:
        r.join(60)
    assert not any(r.is_alive() for r in readers)
    assert not report.failed and all(r.atomic for r in report.results)
    assert len([r for r in report.results if r.status == "compacted"]) == 9 + 3
    assert seen, "the readers never completed a read"
    assert {n for _, n in seen} == {total}, f"a reader saw another count: {set(seen)}"
    assert {k for k, _ in seen} == {"pyarrow", "duckdb"}
    assert _count(tmp_path) == total
    print(f"reads during compaction: {len(seen)}, stale listings retried: {len(stale)}")


def test_compaction_writes_its_summary_into_its_commit_manifest(tmp_path):
    import json

    n = _make_table(tmp_path)
    report = c.compact(str(tmp_path))
    done = {(r.table, r.partition): r for r in report.results if r.status == "compacted"}
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "_runs").glob("compact-*.json")]
    assert len(manifests) == len(done) == 6  # 4 article partitions, 2 error partitions
    for manifest in manifests:
        s = manifest["summary"]
        assert s["command"] == "compact" and s["exit_code"] == 0
        assert s["run_id"] == manifest["run_id"]
        result = done[(s["table"], s["partition"])]
        assert (s["rows"], s["files_before"], s["files_after"]) == (
            result.rows, result.files_before, result.files_after)
        assert s["rows"] == sum(rows for _, rows in manifest["tables"][s["table"]])
        assert s["timings"]["total_s"] >= 0
    assert sum(m["summary"]["rows"] for m in manifests
               if m["summary"]["table"] == "articles") == n == _count(tmp_path)
