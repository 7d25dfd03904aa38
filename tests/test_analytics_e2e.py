"""The demo corpus through the real pipeline (loopback site, FnApiRunner), then read by
``newsbeam sql`` and ``newsbeam report``: the accounting closes in SQL, duplicates and
errors carry their outlet and language, and the report's figures equal SQL counts."""

from __future__ import annotations

import pytest

from pipelines import report as rep
from pipelines import sql as nsql
from pipelines.demo.run import demo_feeds_file
from pipelines.demo.server import SiteServer
from pipelines.ingest import run
from tests.test_report import CLOCK, assert_figures_match_sql


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    with SiteServer() as server:
        feeds = demo_feeds_file(server.base_url, str(tmp))
        _, summary = run(["--feeds", feeds, "--output", str(out), "--allow-private-network",
                          "--per-host-delay", "0", "--story-similarity", "lexical"],
                         quiet=True)
    assert summary.balanced
    return str(out), summary


@pytest.mark.slow
def test_demo_output_in_sql(demo_out):
    out, summary = demo_out
    con = nsql.connect(out)

    def one(query: str):
        return con.sql(query).fetchone()

    articles, = one("SELECT count(*) FROM articles")
    duplicates, = one("SELECT count(*) FROM duplicates")
    entry_errors, = one("SELECT count(*) FROM errors WHERE level = 'entry'")
    assert articles + duplicates + entry_errors == summary.entries_read
    assert (articles, duplicates) == (summary.articles, summary.duplicates) != (0, 0)
    # Every demo feed names its outlet and language: duplicates and errors carry both.
    assert one("SELECT count(*), count(source), count(language) FROM duplicates") == (
        duplicates, duplicates, duplicates)
    n_errors, with_source, _ = one(
        "SELECT count(*), count(source), count(language) FROM errors")
    assert n_errors > 0 and with_source == n_errors
    # One row per story; every article in exactly one.
    assert one("SELECT count(*), sum(article_count) FROM stories") == (
        one("SELECT count(DISTINCT story_id) FROM articles")[0], articles)
    assert one("SELECT max(outlet_count) FROM stories")[0] >= 2


@pytest.mark.slow
def test_demo_report_figures_equal_sql(demo_out):
    out, _ = demo_out
    page, data = rep.build(out, clock=CLOCK)
    assert rep.read_data(page) == data
    assert_figures_match_sql(data, out)
    assert data["top_echoes"] and data["errors_by_reason"]
