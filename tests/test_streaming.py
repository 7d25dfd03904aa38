"""The unbounded pipeline: state and timers under TestStream, and a bounded local run."""

from __future__ import annotations

import collections
import datetime as dt

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from pipelines.cli import main as cli_main
from pipelines.demo.server import SiteServer
from pipelines.ingest import parse_args
from pipelines.streaming import build_streaming, is_local_runner
from pipelines.streaming import run as run_streaming
from tests.test_watch import make_site, rss
from transforms.feeds.polling import (
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
    assert sorted(urls) == ["a1", "a2", "b1", "d1"]
    assert _windows(out, "articles", "ts") == {0: 4}
    # d1's sighting was forgotten (600 s) before T0+2100, so its page is fetched again;
    # the story stage still knows the article (72 h story window): a url re-listing.
    dups = sorted((d["url"].rsplit("/", 2)[-2] + d["url"].rsplit("/", 1)[-1][0], d["level"],
                   d["duplicate_of"] == d["article_id"]) for d in _read(out, "duplicates")
                  .to_pylist())
    assert dups == [("a1", "url", True), ("d1", "url", True)]
    assert _windows(out, "duplicates", "ts") == {0: 1, 2100: 1}
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
    result, summary = run_streaming(
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
    code = cli_main(["ingest", "--feeds", server.url("/a/feed.xml"), "--output",
                     str(tmp / "out"), "--allow-private-network", "--streaming",
                     "--poll-interval", "0.01", "--cycles", "1", "-q"])
    assert code == 0
    captured = capsys.readouterr()
    assert "runs here as `newsbeam watch`" in captured.err
    assert "cycle 1 " in captured.out and "wrote 2 articles" in captured.out
    assert (tmp / "out" / "_state" / "feeds.json").exists()
    assert _read(tmp / "out", "articles").num_rows == 2


# -- the story stage across fixed windows ------------------------------------------------------

class SequencedSite(SiteServer):
    """A loopback site whose feeds change from poll to poll.

    ``versions[path]`` lists the bodies of a feed: the n-th request gets the n-th (the
    last one from then on). For each feed request the article files already published are
    noted in ``published_at_poll``, so a test can tell that a window was published before
    the next poll came in.
    """

    def __init__(self, root, out):
        super().__init__(root)
        self.versions: dict[str, list[str]] = {}
        self.published_at_poll: list[list[str]] = []
        self._out = out
        self._served: collections.Counter = collections.Counter()

    def _override_for(self, target, path):
        if path not in self.versions:
            return super()._override_for(target, path)
        with self._lock:
            n = self._served[path]
            self._served[path] += 1
        self.published_at_poll.append(sorted(
            p.name for p in (self._out / "articles").rglob("part-*.parquet")))
        body = self.versions[path][min(n, len(self.versions[path]) - 1)]
        return 200, {"Content-Type": "application/rss+xml"}, body.encode()


def dated_rss(items: list[tuple[str, str, int]]) -> str:
    """An RSS feed of (path, title, minutes after T0 published) items."""
    def item(path, title, minutes):
        when = dt.datetime.fromtimestamp(T0 + 60 * minutes, dt.UTC)
        return (f"<item><title>{title}</title><link>{{{{BASE}}}}{path}</link>"
                f"<guid>{{{{BASE}}}}{path}</guid><pubDate>"
                f"{when:%a, %d %b %Y %H:%M:%S} GMT</pubDate></item>")
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            "<title>Wire watch</title><link>{{BASE}}/</link><language>en</language>"
            + "".join(item(*i) for i in items) + "</channel></rss>")


def story_page(title: str, text: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}"
            f"</title></head><body><article><h1>{title}</h1><p>{text}</p></article>"
            f"</body></html>")


STORY_WINDOW_HOURS = 1.0
# Originals at poll 1; echo, same-body copy and near copy at poll 2 (the next window); the
# same three again at poll 3, two hours later, when the story state (1 h) has expired.
ORIGINALS = [("/o/echoed.html", "echoed", -5), ("/o/copied.html", "copied", -5),
             ("/o/edited.html", "edited", -5), ("/o/missing.html", "missing", -5)]
COPIES = [("/k/echo.html", "echo", 0), ("/k/copy.html", "copy", 0),
          ("/k/near.html", "near", 0)]
LATE = [("/l/echo.html", "late echo", 10), ("/l/copy.html", "late copy", 10),
        ("/l/near.html", "late near", 10)]
LATE_POLL = 2 * 3600


@pytest.fixture(scope="module")
def cross_window_run(tmp_path_factory):
    """One TestStream run of the unbounded pipeline over three polls (shared by the tests
    below: a run takes tens of seconds)."""
    from tests.test_stories import KURSK, WIRE, copies
    from tests.test_watch import STORIES

    tmp = tmp_path_factory.mktemp("cross")
    out = tmp / "out"
    site = tmp / "site"
    near_body = next(a.body for a in copies() if a.article_id == "near")
    pages = {
        "/o/echoed.html": KURSK["en-soldiers"][1:], "/o/copied.html": ("Orchestra", STORIES["c2"]),
        "/o/edited.html": ("Central bank holds rates", WIRE),
        "/k/echo.html": KURSK["en-zelensky"][1:], "/k/copy.html": ("Orchestra", STORIES["c2"]),
        "/k/near.html": ("Bank leaves rates on hold", near_body),
    }
    for late, early in (("/l/echo.html", "/k/echo.html"), ("/l/copy.html", "/k/copy.html"),
                        ("/l/near.html", "/k/near.html")):
        pages[late] = pages[early]
    for path, (title, text) in pages.items():
        (site / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (site / path.lstrip("/")).write_text(story_page(title, text))
    with SequencedSite(site, out) as server:
        feed = "/wire/feed.xml"
        # Feeds keep listing what they listed before: re-listings are not new entries.
        server.versions[feed] = [dated_rss(ORIGINALS), dated_rss(ORIGINALS + COPIES),
                                 dated_rss(COPIES + LATE)]
        config, _ = parse_args(["--feeds", server.url(feed), "--output", str(out),
                                "--allow-private-network", "--run-id", "cw",
                                "--fetch-threads", "2",
                                "--story-window-hours", str(STORY_WINDOW_HOURS)])
        impulses = (TestStream()
                    .advance_watermark_to(T0).add_elements([TimestampedValue(T0, T0)])
                    # The first window closes before the copies are polled.
                    .advance_watermark_to(T0 + 300)
                    .add_elements([TimestampedValue(T0 + 300, T0 + 300)])
                    .advance_watermark_to(T0 + LATE_POLL)
                    .add_elements([TimestampedValue(T0 + LATE_POLL, T0 + LATE_POLL)])
                    .advance_watermark_to_infinity())
        options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
        with beam.Pipeline(options=options) as p:
            build_streaming(p, config, 300, backoff=60, impulse=impulses)
        yield out, server


def _by_path(rows):
    return {r["url"].split("/", 3)[-1]: r for r in rows}


@pytest.mark.slow
def test_copies_and_echoes_in_a_later_window_are_matched(cross_window_run):
    out, _ = cross_window_run
    articles = _by_path(_read(out, "articles").to_pylist())
    dups = _by_path(_read(out, "duplicates").to_pylist())
    original = {p: articles[p]["article_id"] for p in
                ("o/echoed.html", "o/copied.html", "o/edited.html")}
    # The echo came one window after its original and joined the original's story.
    echo = articles["k/echo.html"]
    assert (echo["story_id"], echo["is_story_lead"]) == (original["o/echoed.html"], False)
    assert 0.0 < echo["story_similarity"] <= 1.0
    # The same-body copy and the near copy were dropped, pointing at their originals.
    assert (dups["k/copy.html"]["level"], dups["k/copy.html"]["duplicate_of"]) == (
        "content", original["o/copied.html"])
    assert (dups["k/near.html"]["level"], dups["k/near.html"]["duplicate_of"]) == (
        "near", original["o/edited.html"])
    assert "k/copy.html" not in articles and "k/near.html" not in articles
    # Originals in the first window, the decisions about the copies in the second.
    assert _windows(out, "articles", "cw")[0] == 3
    assert _windows(out, "duplicates", "cw") == {300: 2}


@pytest.mark.slow
def test_copies_after_the_story_window_are_not_matched(cross_window_run):
    """The same texts two hours later (window 1 h): the state has expired, so they open
    stories of their own, although their published times are within the window."""
    out, _ = cross_window_run
    articles = _by_path(_read(out, "articles").to_pylist())
    for path in ("l/echo.html", "l/copy.html", "l/near.html"):
        row = articles[path]
        assert (row["story_id"], row["is_story_lead"]) == (row["article_id"], True), path
    assert _windows(out, "articles", "cw") == {0: 3, 300: 1, LATE_POLL: 3}


@pytest.mark.slow
def test_cross_window_accounting_and_windows_published_as_they_close(cross_window_run):
    out, server = cross_window_run
    entries = len(ORIGINALS) + len(COPIES) + len(LATE)  # distinct items the feed listed
    written = _read(out, "articles").num_rows
    duplicates = _read(out, "duplicates").num_rows
    errors = _read(out, "errors").to_pylist()
    assert [(e["url"].endswith("/o/missing.html"), e["level"], e["reason"])
            for e in errors] == [(True, "entry", "http_404")]
    assert (written, duplicates, len(errors)) == (7, 2, 1)
    assert entries == written + duplicates + len(errors)
    assert len(set(_read(out, "articles").column("article_id").to_pylist())) == written
    # Each window was published before the next poll: output lands every window.
    def windows(names):
        return {int(n.split("-")[2]) - T0 for n in names}

    assert [windows(names) for names in server.published_at_poll] == [set(), {0}, {0, 300}]


def _one_window_each(groups: list[list], start: int = T0) -> TestStream:
    """A TestStream putting each group of elements into its own 300 s window, in order."""
    stream = TestStream()
    for i, group in enumerate(groups):
        t = start + 300 * i
        stream = stream.advance_watermark_to(t).add_elements(
            [TimestampedValue(x, t) for x in group])
    return stream.advance_watermark_to_infinity()


@pytest.mark.slow
def test_story_stage_across_windows_gives_the_batch_stories():
    """The fixture corpus of tests/test_stories.py, each story told over four windows:
    the same story ids and dropped copies as when it all comes in one batch."""
    from tests.test_stories import NOW, copies, corpus, expected_stories
    from transforms.stories.stage import AssignStories

    by_id = {a.article_id: a for a in corpus() + copies()}
    windows = [["en-soldiers", "battle", "wire"], ["en-zelensky", "strike", "exact"],
               ["uk", "aid", "near"], ["ru", "strike-ru"]]
    stream = _one_window_each([[by_id[i] for i in w] for w in windows])
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        articles = p | stream | beam.WindowInto(FixedWindows(300))
        out = articles | AssignStories(clock=lambda: NOW, across_windows=True)
        assert_that(out.articles | beam.Map(lambda a: (a.article_id, a.story_id,
                                                       a.is_story_lead)),
                    equal_to(expected_stories() + [("wire", "wire", True)]), label="stories")
        assert_that(out.duplicates | beam.Map(lambda d: (d.article_id, d.level,
                                                         d.duplicate_of)),
                    equal_to([("exact", "content", "wire"), ("near", "near", "wire")]),
                    label="dropped")


@pytest.mark.slow
def test_story_chains_resolve_through_earlier_windows():
    """A chain c5 → c4 → … → c0, one article per window: every article gets the root
    c0, and a near copy of a near copy points at what its parent copied."""
    from transforms.stories.stage import Node, ResolveStories

    def echo(aid, parent, level="echo"):
        return Node(aid, parent, False, level, 0.5, parent)

    nodes = [[Node("c0", "c0", True, "lead", None, None)], [echo("c1", "c0")],
             [echo("c2", "c1")], [echo("c3", "c2", "near")], [echo("c4", "c3")],
             [echo("c5", "c3", "near")]]
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        resolved = (p | _one_window_each(nodes) | beam.WindowInto(FixedWindows(300))
                    | ResolveStories(rounds=3, windowfn=FixedWindows(300),
                                     window=dt.timedelta(hours=1)))
        assert_that(resolved | beam.Map(lambda n: (n.article_id, n.ptr, n.done,
                                                   bool(n.parent_near))),
                    equal_to([("c0", "c0", True, False), ("c1", "c0", True, False),
                              ("c2", "c0", True, False), ("c3", "c0", True, False),
                              ("c4", "c0", True, True), ("c5", "c0", True, True)]))
