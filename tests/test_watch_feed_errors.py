"""``watch`` killed before a cycle publishes keeps that cycle's feed errors.

The cycle's journal carries its feed failures with the backoff they cause; the next start
publishes the error rows the cycle did not, exactly once, and the feed's backoff and its
error row agree.
"""

from __future__ import annotations

import datetime as dt
import io

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import pipelines.execute as execute_module
import pipelines.watch as watch_module
from pipelines.demo.server import SiteServer
from pipelines.watch import parse_watch_args, publish_journaled_errors, watch
from schemas import ERROR_SCHEMA
from transforms.sinks.parquet import to_rows
from transforms.sinks.state import StateStore
from transforms.util import error_record

START = dt.datetime(2024, 11, 23, 10, 0, tzinfo=dt.UTC)
PAGE = ("<html lang='en'><head><title>Harbour</title></head><body><article><h1>Harbour</h1>"
        "<p>The harbour reopened after the storm, and the first ferries left on time this "
        "morning. Repairs to the pier will go on for another month, the port said.</p>"
        "</article></body></html>")


def rss(base_path: str) -> str:
    return ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>A</title>"
            "<link>{{BASE}}/</link><item><title>Harbour</title>"
            f"<link>{{{{BASE}}}}{base_path}</link><guid>{{{{BASE}}}}{base_path}</guid>"
            "<pubDate>Sat, 23 Nov 2024 08:00:00 GMT</pubDate></item></channel></rss>")


class FakeClock:
    def __init__(self, start: dt.datetime):
        self.t = start - dt.timedelta(seconds=300)

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(seconds=300)
        return self.t


class Killed(BaseException):
    """Stands for the process dying while the cycle's pipeline runs."""


def feed_errors(out) -> list[dict]:
    if not (out / "errors").exists():
        return []
    rows = ds.dataset(str(out / "errors"), partitioning="hive").to_table().to_pylist()
    return [r for r in rows if r["level"] == "feed"]


def test_a_cycle_killed_before_publishing_keeps_its_feed_error(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "1.html").write_text(PAGE)
    out = tmp_path / "out"
    with SiteServer(site) as server:
        server.set_file("/a/feed.xml", rss("/a/1.html"))
        server.overrides["/b/feed.xml"] = (404, {}, b"gone")
        feeds = tmp_path / "feeds.txt"
        good, broken = server.url("/a/feed.xml"), server.url("/b/feed.xml")
        feeds.write_text(f"{good}\n{broken}\n")

        def config():
            return parse_watch_args([
                "--feeds", str(feeds), "--output", str(out), "--allow-private-network",
                "--cycles", "1", "--per-host-delay", "0", "--feed-backoff", "3600"])

        # Cycle 1 polls (B fails), journals, and dies inside its pipeline.
        def die(*args, **kwargs):
            raise Killed

        monkeypatch.setattr(execute_module, "build", die)  # the run tail of every cycle
        with pytest.raises(Killed):
            watch(config(), clock=FakeClock(START), out=io.StringIO())
        monkeypatch.undo()
        store = StateStore(str(out))
        assert len(store.journals()) == 1 and feed_errors(out) == []

        # The next start publishes B's error, and B backs off as its journaled state says.
        printed = io.StringIO()
        report = watch(config(), clock=FakeClock(START + dt.timedelta(seconds=300)),
                       out=printed)
        assert report.recovered == 1
        assert report.cycles[0].polls == {"fetched": 1, "backing_off": 1}
        assert report.cycles[0].summary.articles == 1
        rows = feed_errors(out)
        assert [(r["url"], r["feed_url"], r["stage"], r["reason"], r["http_status"],
                 r["attempts"]) for r in rows] == [
            (broken, broken, "fetch_feed", "http_404", 404, 1)]
        state = store.load_feeds()[broken]
        assert state["failures"] == 1 and state["last_status"] == "failed"
        assert state["retry_at"] == rows[0]["occurred_at"].timestamp() + 3600
        assert server.count("/b/feed.xml") == 1
        assert store.journals() == []
        # A reader that follows the commit manifests sees the recovered row too.
        from transforms.sinks.publish import committed_files

        committed = committed_files(str(out), "errors")
        assert sum(pq.read_table(p).num_rows for p in committed) == 1

        # Later starts write nothing again.
        watch(config(), clock=FakeClock(START + dt.timedelta(seconds=900)),
              out=io.StringIO())
        assert len(feed_errors(out)) == 1
        assert server.count("/b/feed.xml") == 1


def test_publishing_journaled_errors_matches_what_the_run_published(tmp_path):
    feed = "http://x.test/feed"
    first = error_record(feed, feed, "feed", "fetch_feed", "http_503", "busy", 503, 3, START)
    second = error_record("http://y.test/f", "http://y.test/f", "feed", "fetch_feed",
                          "dns_error", "gone", None, 1, START + dt.timedelta(days=1))
    journal = {"feed_errors": [watch_module.error_to_json(e) for e in (first, second)]}
    # The run published the first one before it died; only the second is missing.
    part = tmp_path / "errors" / "date=2024-11-23"
    part.mkdir(parents=True)
    pq.write_table(to_rows([first], ERROR_SCHEMA), part / "part-R1-g-00000.parquet")
    assert publish_journaled_errors(str(tmp_path), "R1", journal) == 1
    assert publish_journaled_errors(str(tmp_path), "R1", journal) == 0
    rows = ds.dataset(str(tmp_path / "errors"), partitioning="hive").to_table().to_pylist()
    assert sorted((r["url"], str(r["date"]), r["reason"]) for r in rows) == [
        (feed, "2024-11-23", "http_503"), ("http://y.test/f", "2024-11-24", "dns_error")]
    assert watch_module.error_from_json(journal["feed_errors"][1]) == second
    assert not list((tmp_path / "_staging").rglob("*.parquet"))
