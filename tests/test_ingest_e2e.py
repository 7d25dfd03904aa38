"""End to end: the real ``newsbeam`` CLI over the demo corpus on loopback, Parquet read back.

Every feed entry must end as exactly one written article, duplicate record or error
record, and the counts printed by the run, Beam's counters and the files read back with
pyarrow and DuckDB must agree.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from pipelines.demo import SITE_DIR
from pipelines.demo.run import demo_feeds_file
from pipelines.demo.server import SiteServer
from pipelines.ingest import run
from transforms.fetching.urls import canonical_url

pytestmark = pytest.mark.slow
EXPECTED = json.loads((Path(SITE_DIR) / "expected.json").read_text(encoding="utf-8"))


def table(out: Path, name: str):
    return ds.dataset(out / name, format="parquet", partitioning="hive").to_table()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Runs the ingest pipeline once over the demo corpus; returns (out, summary, base)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    with SiteServer() as server:
        feeds = demo_feeds_file(server.base_url, str(out.parent))
        _, summary = run(["--feeds", feeds, "--output", str(out), "--allow-private-network",
                          "--per-host-delay", "0.05"], quiet=True)
        base = server.base_url
    return out, summary, base


def links(base: str, kind: str) -> set[str]:
    return {canonical_url(e["link"].replace("{{BASE}}", base))
            for e in EXPECTED["entries"] if e["kind"] == kind}


def test_every_entry_is_accounted_for(demo_run):
    out, s, _ = demo_run
    articles, dups, errors = table(out, "articles"), table(out, "duplicates"), table(out, "errors")
    entry_errors = [r for r in errors.to_pylist() if r["level"] == "entry"]
    assert s.entries_read == EXPECTED["total_entries"]
    assert articles.num_rows + dups.num_rows + len(entry_errors) == EXPECTED["total_entries"]
    assert (s.articles, s.duplicates, s.entry_errors) == (
        articles.num_rows, dups.num_rows, len(entry_errors))
    assert s.balanced
    # Beam's counters tell the same story as the files.
    assert s.counters["rows_written_articles"] == articles.num_rows
    assert s.counters.get("rows_written_duplicates", 0) == dups.num_rows
    ids = articles.column("article_id").to_pylist()
    assert len(ids) == len(set(ids)), "an article was written twice"


def test_duplicates_errors_and_fallbacks_land_where_expected(demo_run):
    out, _, base = demo_run
    dups = table(out, "duplicates").to_pylist()
    assert {d["url"] for d in dups if d["level"] == "url"} == links(base, "url_duplicate")
    errors = table(out, "errors").to_pylist()
    dead = [e for e in errors if e["stage"] == "fetch_page"]
    assert {e["url"] for e in dead} == links(base, "dead_link")
    assert all(e["reason"] == "http_404" and e["http_status"] == 404 for e in dead)
    broken = [e for e in errors if e["level"] == "feed"]
    assert len(broken) == len(EXPECTED["malformed_feeds"])
    assert broken[0]["reason"] == "malformed_feed" and broken[0]["message"]
    rows = {r["url"]: r for r in table(out, "articles").to_pylist()}
    for url in links(base, "feed_fallback"):
        assert rows[url]["body_source"] == "feed_content" and len(rows[url]["body"]) > 200
    for url in links(base, "guid_collision") | links(base, "echo"):
        assert url in rows


def test_languages_dates_and_topics(demo_run):
    out, _, base = demo_run
    rows = {r["url"]: r for r in table(out, "articles").to_pylist()}
    today = dt.datetime.now(dt.UTC).date()
    for e in EXPECTED["entries"]:
        url = canonical_url(e["link"].replace("{{BASE}}", base))
        if url not in rows or e["kind"] == "url_duplicate":
            continue
        row = rows[url]
        assert row["language"] == e["language"], url
        if e["date_quality"] == "ok":
            assert str(row["date"]) == e["published"][:10], url
        else:
            # Missing or implausible in the feed: the page's own date if it has one,
            # else the fetch date; never 1970.
            published = row["published_at"]
            fetch_days = {str(today), str(today - dt.timedelta(days=1))}
            if published is None:
                assert str(row["date"]) in fetch_days, url
            else:
                assert published.year >= 2020 and str(row["date"]) == str(published.date())
        assert row["topic_source"] in {"feed", "category", "classifier", "none"}
        assert (row["topic"] == "unclassified") == (row["topic_code"] is None)


def test_duckdb_reads_the_same_rows(demo_run):
    out, s, _ = demo_run
    n, parts = duckdb.sql(
        f"SELECT count(*), count(DISTINCT (date, topic)) FROM read_parquet("
        f"'{out}/articles/**/*.parquet', hive_partitioning=true)").fetchone()
    assert n == s.articles and parts == len(s.by_partition)


def test_cli_demo_command(tmp_path):
    """The Quick start's demo command, as a user runs it."""
    out = tmp_path / "demo-output"
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accounting OK" in proc.stdout
    assert "errors by stage/reason" in proc.stdout and "told by several articles" in proc.stdout
    assert table(out, "articles").num_rows > 20
