"""The unbounded pipeline: state and timers under TestStream, and a bounded local run."""

from __future__ import annotations

import collections
import datetime as dt

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines.demo.server import SiteServer
from pipelines.ingest import parse_args, run
from pipelines.streaming import build_streaming, is_local_runner
from pipelines.watch import WatchReport
from tests.test_watch import make_site, rss
from transforms.polling import (
    FeedState,
    after_failure,
    after_response,
    backoff_seconds,
    conditional_headers,
    is_due,
    sight,
)

T0 = 1732356000  # 2024-11-23T10:00:00Z, a multiple of the 300 s windows


def test_feed_state_transitions():
    s = after_response(FeedState(), 200, {"etag": '"e1"', "last-modified": "Sat, 23 Nov"}, 10.0)
    assert conditional_headers(s) == {"If-None-Match": '"e1"', "If-Modified-Since": "Sat, 23 Nov"}
    assert s.last_listing_at == 10.0
    s304 = after_response(s, 304, {}, 20.0)
    assert (s304.etag, s304.last_status, s304.last_listing_at) == ('"e1"', "not_modified", 10.0)
    f1 = after_failure(s304, None, 30.0, base=60, cap=1000)
    assert (f1.failures, f1.retry_at, f1.etag) == (1, 90.0, '"e1"')
    assert not is_due(f1, 89.0) and is_due(f1, 90.0)
    f2 = after_failure(f1, 500.0, 100.0, base=60, cap=1000)  # Retry-After beats backoff
    assert (f2.failures, f2.retry_at) == (2, 600.0)
    assert [backoff_seconds(n, 60, 1000) for n in range(7)] == [0, 60, 120, 240, 480, 960, 1000]
    assert after_response(f2, 200, {}, 700.0).failures == 0


def test_sight_records_feeds_per_key():
    from schemas import Entry
    from tests.test_watch import START

    def entry(feed):
        return Entry(entry_id="1" * 16, url="http://x/1", link="http://x/1", guid="g",
                     feed_url=feed, source="s", title="t", summary="", content="",
                     published_at=None, authors=(), categories=(), language_hint=None,
                     topic_hint=None, fetched_at=START)

    first, rec = sight(None, entry("F"), 1.0)
    again, rec = sight(rec, entry("F"), 2.0)
    other, rec = sight(rec, entry("G"), 3.0)
    assert [first.verdict, again.verdict, other.verdict] == ["new", "unchanged", "duplicate"]
    assert other.kept_id == "1" * 16 and rec.feeds == {"F", "G"} and rec.last_seen == 3.0


def test_local_runner_detection():
    assert is_local_runner(PipelineOptions([]))
    assert is_local_runner(PipelineOptions(["--runner=DirectRunner"]))
    assert not is_local_runner(PipelineOptions(["--runner=DataflowRunner"]))
    assert not is_local_runner(PipelineOptions(["--runner=FlinkRunner"]))


@pytest.fixture
def site(tmp_path):
    folder = tmp_path / "site"
    make_site(folder)
    with SiteServer(folder) as server:
        server.set_file("/a/feed.xml", rss("Outlet A", [("/a/1.html", "a1"), ("/a/2.html", "a2")]))
        server.set_file("/b/feed.xml", rss("Outlet B", [("/b/1.html", "b1"),
                                                        ("/a/1.html", "a1 via B")]))
        server.overrides["/c/feed.xml"] = (503, {"Retry-After": "500"}, b"down")
        # D sends no validators: it is fetched in full every time and re-lists d1.
        server.overrides["/d/feed.xml"] = (
            200, {"Content-Type": "application/rss+xml"},
            rss("Outlet D", [("/d/1.html", "d1")]).encode())
        yield server, tmp_path


def _read(out, table):
    return ds.dataset(str(out / table), format="parquet", partitioning="hive").to_table()


def _windows(out, table, run_id):
    """Rows per window start, from the window token in each published file name."""
    counts: collections.Counter = collections.Counter()
    for path in (out / table).rglob(f"part-{run_id}-*.parquet"):
        start = int(path.name[len(f"part-{run_id}-"):].split("-")[0])
        counts[start - T0] += ds.dataset(str(path), format="parquet").count_rows()
    return dict(counts)


@pytest.mark.slow
def test_teststream_drives_state_timers_and_windows(site):
    """Event-time polls on the BundleBasedDirectRunner, through to Parquet per window."""
    server, tmp = site
    out = tmp / "out"
    feeds = [server.url(f"/{x}/feed.xml") for x in "abcd"]
    config, _ = parse_args([*sum((["--feeds", f] for f in feeds), []), "--output", str(out),
                            "--allow-private-network", "--run-id", "ts", "--fetch-threads", "2"])
    impulses = (TestStream()
                .advance_watermark_to(T0).add_elements([TimestampedValue(T0, T0)])
                .advance_watermark_to(T0 + 300).add_elements([TimestampedValue(T0 + 300,
                                                                               T0 + 300)])
                .advance_watermark_to(T0 + 600).add_elements([TimestampedValue(T0 + 600,
                                                                               T0 + 600)])
                # Nothing lists the keys for 1,400 s > forget_after: their timers fire.
                .advance_watermark_to(T0 + 2000)
                .add_elements([TimestampedValue(T0 + 2100, T0 + 2100)])
                .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        build_streaming(p, config, 300, forget_after=dt.timedelta(seconds=600), backoff=60,
                        impulse=impulses)

    urls = [u.rsplit("/", 2)[-2] + u.rsplit("/", 1)[-1][0]
            for u in _read(out, "articles").column("url").to_pylist()]
    # d1 is written again only because its key was forgotten (600 s) before T0+2100.
    assert sorted(urls) == ["a1", "a2", "b1", "d1", "d1"]
    assert _windows(out, "articles", "ts") == {0: 4, 2100: 1}
    dups = _read(out, "duplicates").to_pylist()
    assert [(d["url"].endswith("/a/1.html"), d["level"]) for d in dups] == [(True, "url")]
    # C failed at T0, backed off at T0+300 (Retry-After 500), failed at T0+600 and T0+2100.
    errors = _read(out, "errors").to_pylist()
    assert [(e["feed_url"].endswith("/c/feed.xml"), e["reason"]) for e in errors] == [
        (True, "http_503")] * 3
    assert _windows(out, "errors", "ts") == {0: 1, 600: 1, 2100: 1}
    assert server.count("/c/feed.xml") == 3
    # A and B: one full GET, then conditional requests answered 304.
    for path in ("/a/feed.xml", "/b/feed.xml"):
        log = [r for r in server.requests if r.path == path]
        assert [r.status for r in log] == [200, 304, 304, 304]
        assert [r.conditional for r in log] == [False, True, True, True]
    pages = collections.Counter(r.path for r in server.requests if r.path.endswith(".html"))
    assert pages == {"/a/1.html": 1, "/a/2.html": 1, "/b/1.html": 1, "/d/1.html": 2}


@pytest.mark.slow
def test_bounded_periodic_impulse_run_on_the_default_runner(site):
    """ingest --streaming --stop-after: real PeriodicImpulse, default runner, Parquet back."""
    server, tmp = site
    out = tmp / "out"
    del server.overrides["/c/feed.xml"]
    server.set_file("/c/feed.xml", rss("Outlet C", [("/c/1.html", "c1")]))
    result, summary = run(
        ["--feeds", server.url("/a/feed.xml"), "--feeds", server.url("/c/feed.xml"),
         "--output", str(out), "--allow-private-network", "--streaming", "--poll-interval",
         "1", "--stop-after", "2.5", "--run-id", "bounded"], quiet=True)
    assert summary.balanced, summary.render()
    assert summary.articles == 3
    urls = _read(out, "articles").column("url").to_pylist()
    assert sorted(u.rsplit("/", 2)[-2] + u.rsplit("/", 1)[-1][0] for u in urls) == [
        "a1", "a2", "c1"]
    for path in ("/a/feed.xml", "/c/feed.xml"):
        log = [r for r in server.requests if r.path == path]
        assert len(log) >= 2, log  # at least two impulses within 2.5 s
        assert log[0].status == 200
        assert all(r.conditional and r.status == 304 for r in log[1:])
    assert all(server.count(f"/{p}.html") == 1 for p in ("a/1", "a/2", "c/1"))
    assert all(name.startswith("part-bounded-") for name in
               (p.name for p in (out / "articles").rglob("*.parquet")))


@pytest.mark.slow
def test_local_streaming_without_a_stop_runs_watch(site, capsys):
    server, tmp = site
    _, report = run(["--feeds", server.url("/a/feed.xml"), "--output", str(tmp / "out"),
                     "--allow-private-network", "--streaming", "--poll-interval", "0.01",
                     "--cycles", "1"], quiet=True)
    assert isinstance(report, WatchReport) and report.cycles[0].summary.articles == 2
    assert "runs here as `newsbeam watch`" in capsys.readouterr().err
