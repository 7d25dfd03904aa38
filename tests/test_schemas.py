"""Pins the on-disk schemas: changing them must be deliberate (bump SCHEMA_VERSION)."""

import pyarrow as pa

from schemas import ARTICLE_SCHEMA, DUPLICATE_SCHEMA, ERROR_SCHEMA, SCHEMA_VERSION

TS = pa.timestamp("us", tz="UTC")
STRS = pa.list_(pa.string())


def _shape(schema):
    return [(f.name, f.type, f.nullable) for f in schema]


def test_article_schema_is_pinned():
    assert SCHEMA_VERSION == 2
    assert _shape(ARTICLE_SCHEMA) == [
        ("article_id", pa.string(), False), ("url", pa.string(), False),
        ("feed_url", pa.string(), False), ("source", pa.string(), False),
        ("title", pa.string(), False), ("body", pa.string(), False),
        ("body_source", pa.string(), False), ("authors", STRS, False),
        ("published_at", TS, True), ("fetched_at", TS, False),
        ("language", pa.string(), False), ("language_confidence", pa.float32(), True),
        ("topic_code", pa.string(), True), ("topic_source", pa.string(), False),
        ("categories", STRS, False), ("content_hash", pa.string(), False),
        ("story_id", pa.string(), False), ("is_story_lead", pa.bool_(), False),
        ("story_similarity", pa.float32(), True), ("schema_version", pa.int32(), False),
    ]


def test_side_tables_are_pinned():
    assert [f.name for f in DUPLICATE_SCHEMA] == [
        "url", "feed_url", "article_id", "duplicate_of", "level", "similarity", "title",
        "detected_at", "schema_version", "source", "language"]
    assert [f.name for f in ERROR_SCHEMA] == [
        "url", "feed_url", "level", "stage", "reason", "message", "http_status", "attempts",
        "occurred_at", "schema_version", "source", "language"]
    # Added in version 2, after every older column and nullable: files of version 1 lack
    # them, and a reader combining files by name reads them as null there.
    for schema in (DUPLICATE_SCHEMA, ERROR_SCHEMA):
        assert [(f.type, f.nullable) for f in schema][-2:] == [(pa.string(), True)] * 2


def test_every_column_is_documented():
    for schema in (ARTICLE_SCHEMA, DUPLICATE_SCHEMA, ERROR_SCHEMA):
        for f in schema:
            assert f.metadata and f.metadata[b"doc"], f.name


def test_records_repair_strings_that_parquet_cannot_store():
    import datetime as dt

    from schemas import ErrorRecord
    from schemas.records import storable

    assert storable("a\ud800b\x00c\ud83d\ude00") == "a\ufffdbc\U0001f600"
    assert storable("plain") == "plain"
    record = ErrorRecord(url="https://a.example/\udc00", feed_url="", level="entry",
                         stage="extract", reason="empty_body", message="nul\x00here",
                         http_status=None, attempts=1,
                         occurred_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), date="2024-01-01",
                         schema_version=1)
    assert (record.url, record.message) == ("https://a.example/\ufffd", "nulhere")
