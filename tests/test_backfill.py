"""Backfill from JSON Lines through the whole pipeline (no network needed)."""

import datetime as dt
import json

import pyarrow.dataset as ds
import pytest

from pipelines.ingest import run
from transforms.feeds.backfill import BackfillError, parse_backfill_line

NOW = dt.datetime(2024, 11, 24, 12, tzinfo=dt.UTC)


def test_parse_line_and_clear_errors():
    e = parse_backfill_line(json.dumps({
        "url": "https://X.example/a?utm_source=z", "text": "Body text.", "title": "T",
        "published": "2024-11-23T10:00:00Z", "language": "EN"}), NOW)
    assert e.url == "https://x.example/a" and e.body == "Body text."
    assert e.published_at == dt.datetime(2024, 11, 23, 10, tzinfo=dt.UTC)
    assert e.language_hint == "en" and e.source == "x.example"
    for line, reason in [("{not json", "invalid_json"), ("[1]", "invalid_json"),
                         ('{"text": "x"}', "missing_url"),
                         ('{"url": "https://a/"}', "missing_text"),
                         ('{"url": "ftp://a/", "text": "x"}', "bad_url"),
                         ('{"url": "https://a/", "text": "x", "published": "yesterday"}',
                          "bad_date")]:
        with pytest.raises(BackfillError) as info:
            parse_backfill_line(line, NOW)
        assert info.value.reason == reason


BODY = ("The city council of Lviv approved the reconstruction plan for the old tram depot "
        "on Thursday. Work begins in spring and should take two years. ") * 4


@pytest.mark.slow
def test_backfill_run_accounts_for_every_line(tmp_path):
    lines = [
        {"url": "https://a.example/1", "text": BODY, "title": "Depot",
         "published": "2024-11-23T08:00:00+00:00"},
        {"url": "https://a.example/1?utm_source=rss", "text": BODY},  # same canonical URL
        {"url": "https://b.example/2",
         "text": "Der Stadtrat hat am Donnerstag den Plan für den Umbau des alten "
                 "Straßenbahndepots beschlossen.",
         "published": "1970-01-01T00:00:00Z"},
        {"url": "https://c.example/3"},  # no text
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json at all\n\n")
    out = tmp_path / "out"
    _, summary = run(["--articles", str(src), "--output", str(out)], quiet=True)
    assert summary.entries_read == 5
    assert (summary.articles, summary.duplicates, summary.entry_errors) == (2, 1, 2)
    assert summary.balanced
    articles = ds.dataset(out / "articles", format="parquet", partitioning="hive").to_table()
    rows = {r["url"]: r for r in articles.to_pylist()}
    assert rows["https://a.example/1"]["language"] == "en"
    assert rows["https://b.example/2"]["language"] == "de"
    # The 1970 date is implausible: the partition falls back to the fetch date.
    assert rows["https://b.example/2"]["published_at"] is None
    assert str(rows["https://a.example/1"]["date"]) == "2024-11-23"
    assert all(r["body_source"] == "backfill" for r in rows.values())
    errors = ds.dataset(out / "errors", format="parquet", partitioning="hive").to_table()
    assert sorted(errors.column("reason").to_pylist()) == ["invalid_json", "missing_text"]
