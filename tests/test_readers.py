"""The README's reading examples, run as they are written, on an output published by the
real publish step: the partition types each reader gives, files of the older schema, and
the guard against reading the output's root as one table."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.analytics_output import (
    ARTICLES,
    DUPLICATES,
    DUPLICATES_V1,
    ERRORS,
    ERRORS_V1,
    build_output,
)
from transforms.sinks.parquet import LAYOUT_NOTE

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- reader example: tests/test_readers.py runs this block -->"


def readme_examples() -> list[str]:
    """The Python blocks the README marks as reader examples, in order."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2 and text.count(MARKER) == 2
    return blocks


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return build_output(str(tmp_path_factory.mktemp("out")))


@pytest.fixture(scope="module")
def examples(out):
    """The namespace after running the README's blocks with ``out`` set to the output."""
    first, second = readme_examples()
    assert 'out = "demo-output"\n' in first
    namespace: dict = {}
    exec(first.replace('out = "demo-output"', f"out = {out!r}"), namespace)  # noqa: S102
    exec(second, namespace)  # noqa: S102
    return namespace


def test_partition_types_per_reader_are_as_documented(examples, out):
    import pandas as pd
    import polars as pl

    duck = dict(zip(examples["duck"].columns, map(str, examples["duck"].types), strict=True))
    assert (duck["date"], duck["topic"]) == ("DATE", "VARCHAR")
    pl_df = examples["pl_df"]
    assert (pl_df.schema["date"], pl_df.schema["topic"]) == (pl.Date, pl.String)
    pa_table = examples["pa_table"]
    assert pa_table.schema.field("date").type == pa.string()
    assert pa_table.schema.field("topic").type == pa.string()
    pd_df = examples["pd_df"]
    assert isinstance(pd_df["date"].dtype, pd.CategoricalDtype)
    assert isinstance(pd_df["topic"].dtype, pd.CategoricalDtype)
    plain = pq.read_table(f"{out}/articles")
    assert pa.types.is_dictionary(plain.schema.field("date").type)
    assert pa.types.is_dictionary(plain.schema.field("topic").type)
    # Named partition types: dates in pyarrow and pandas too.
    assert examples["pa_typed"].schema.field("date").type == pa.date32()
    assert str(examples["pd_typed"]["date"].dtype).startswith("datetime64")
    # Plain globs see every file, the one no manifest names included.
    assert len(pl_df) == len(pd_df) == pa_table.num_rows == len(ARTICLES) + 1
    assert sorted(examples["pd_typed"]["date"].dt.strftime("%Y-%m-%d")) == sorted(
        [a.date for a in ARTICLES] + ["2024-11-24"])


def test_older_files_read_with_null_source_and_language(examples):
    rows = len(DUPLICATES_V1 + DUPLICATES)
    known = sum(d.source is not None for d in DUPLICATES)
    dups = examples["dups"]
    assert dups.aggregate("count(*), count(source), count(language)").fetchone() == (
        rows, known, known)
    pl_dups = examples["pl_dups"]
    assert len(pl_dups) == rows and pl_dups["source"].null_count() == rows - known
    pd_dups = examples["pd_dups"]
    assert len(pd_dups) == rows and int(pd_dups["source"].notna().sum()) == known
    assert set(pd_dups["language"].dropna()) == {"en", "ru"}


def test_reading_the_root_fails_naming_the_note_instead_of_mixing_tables(out, tmp_path):
    import pandas as pd

    assert (Path(out) / LAYOUT_NOTE).read_text(encoding="utf-8").startswith(
        "This folder is a newsbeam output")
    for read in (lambda p: pd.read_parquet(p), lambda p: ds.dataset(p, partitioning="hive")):
        with pytest.raises(pa.ArrowInvalid, match=LAYOUT_NOTE):
            read(out)
    # DuckDB and polars refuse a glob over the root by themselves.
    import duckdb
    import polars as pl

    with pytest.raises(duckdb.Error, match="Hive partition mismatch"):
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet', "
                   "hive_partitioning=true)").fetchall()
    with pytest.raises(pl.exceptions.PolarsError, match="extra column"):
        pl.read_parquet(f"{out}/**/*.parquet")
    # What the note prevents: without it, pandas mixes the three tables into one frame.
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    (bare / LAYOUT_NOTE).unlink()
    mixed = pd.read_parquet(bare)
    assert len(mixed) == (len(ARTICLES) + 1 + len(DUPLICATES_V1 + DUPLICATES)
                          + len(ERRORS_V1 + ERRORS))


@pytest.mark.slow
def test_spark_reads_dates_and_merges_older_files(out):
    from pyspark.sql import SparkSession
    from pyspark.sql.types import DateType, StringType

    spark = (SparkSession.builder.master("local[1]").appName("newsbeam-readers-test")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.host", "127.0.0.1").getOrCreate())
    try:
        articles = spark.read.parquet(f"{out}/articles")
        types = {f.name: f.dataType for f in articles.schema.fields}
        n_articles = articles.count()
        dups = spark.read.option("mergeSchema", "true").parquet(f"{out}/duplicates")
        sources = sorted((r["source"] or "") for r in dups.select("source").collect())
        try:
            spark.read.parquet(out).count()
            root_error = ""
        except Exception as e:  # noqa: BLE001 - Spark raises its own (Py4J) error types
            root_error = str(e)
    finally:
        spark.stop()
    assert isinstance(types["date"], DateType) and isinstance(types["topic"], StringType)
    assert n_articles == len(ARTICLES) + 1
    assert sources == sorted([""] + [d.source or "" for d in DUPLICATES])
    assert "CONFLICTING_DIRECTORY_STRUCTURES" in root_error


def test_compaction_merges_older_files_into_the_current_schema(tmp_path):
    from pipelines import compact as c
    from pipelines import sql as nsql
    from schemas import DUPLICATE_SCHEMA
    from tests.analytics_output import _stage, _v1, duplicate, t
    from transforms.sinks import publish as pub

    root = str(tmp_path)
    by_date = (lambda r: f"date={r.date}")  # noqa: E731
    old = [duplicate("d1", "a", "content", None, None, t(23, 1))]
    new = [duplicate("d2", "a", "near", "Rheinblick", "de", t(23, 2))]
    _stage(root, "r1", "duplicates", old, _v1(DUPLICATE_SCHEMA), by_date)
    pub.publish_run(root, "r1")
    _stage(root, "r2", "duplicates", new, DUPLICATE_SCHEMA, by_date)
    pub.publish_run(root, "r2")
    report = c.compact(root, target=1 << 30)
    assert not report.failed and [r.status for r in report.results] == ["compacted"]
    files = nsql.committed_files(root, "duplicates")
    assert len(files) == 1 and pq.read_schema(files[0]).names == DUPLICATE_SCHEMA.names
    assert nsql.connect(root).sql("SELECT article_id, source, language FROM duplicates "
                                  "ORDER BY 1").fetchall() == [
        ("d1", None, None), ("d2", "Rheinblick", "de")]
