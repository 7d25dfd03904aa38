"""WriteParquetTable: every row written is read back, in the right partition, once."""

import datetime as dt
import os

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from schemas import ARTICLE_SCHEMA, SCHEMA_VERSION, Article
from transforms.sinks.parquet import WriteParquetTable, article_partition

NOW = dt.datetime(2024, 11, 24, 12, tzinfo=dt.UTC)
TOPICS = ["sport", "politics-government", "unclassified"]


def article(i: int) -> Article:
    return Article(
        article_id=f"{i:016x}", url=f"https://x.example/{i}", feed_url="", source="x",
        title=f"t{i}", body=f"body {i}", body_source="backfill", authors=[], published_at=None,
        fetched_at=NOW, language="en", language_confidence=None, topic=TOPICS[i % 3],
        topic_code=None, topic_source="none", categories=["c"], content_hash="h",
        story_id=f"{i:016x}", is_story_lead=True, story_similarity=None,
        date=f"2024-11-{20 + i % 4:02d}", schema_version=SCHEMA_VERSION)


@pytest.mark.parametrize("rows_per_file", [7, 100_000])
def test_rows_written_equal_rows_read_back(tmp_path, rows_per_file):
    n = 1000
    out = str(tmp_path)
    with TestPipeline() as p:
        _ = (p | beam.Create([article(i) for i in range(n)], reshuffle=True)
             | WriteParquetTable(out, "articles", ARTICLE_SCHEMA, article_partition, "run1",
                                 rows_per_file=rows_per_file))
    table = ds.dataset(os.path.join(out, "articles"), format="parquet",
                       partitioning="hive").to_table()
    ids = table.column("article_id").to_pylist()
    assert len(ids) == n and len(set(ids)) == n
    # Each row sits in the partition its own fields name.
    for row in table.select(["article_id", "date", "topic"]).to_pylist():
        i = int(row["article_id"], 16)
        assert str(row["date"]) == f"2024-11-{20 + i % 4:02d}" and row["topic"] == TOPICS[i % 3]
    # Nothing left in staging, every partition folder made, no colliding names.
    names = [f for _, _, files in os.walk(os.path.join(out, "articles")) for f in files]
    assert all(f.startswith("part-run1-g-") and f.endswith(".parquet") for f in names)
    if rows_per_file < n:  # many files per partition, none overwrote another
        assert len(names) >= n // rows_per_file
    staged = [f for _, _, files in os.walk(os.path.join(out, "_staging")) for f in files]
    assert staged == []
    assert len(os.listdir(os.path.join(out, "articles"))) == 4


def test_partition_values_outside_the_alphabet_are_refused():
    bad = article(1)
    with pytest.raises(ValueError, match="topic"):
        article_partition(bad.__class__(**{**bad.__dict__, "topic": "../../etc"}))
    for date in ["1970-01-01/../x", "2024-11-23\n", "２０２４-11-23", "2024-13-45", ""]:
        with pytest.raises(ValueError, match="date"):
            article_partition(bad.__class__(**{**bad.__dict__, "date": date}))
