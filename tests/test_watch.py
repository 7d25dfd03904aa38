"""Watch mode end to end against a loopback site whose feeds change between cycles."""

from __future__ import annotations

import collections
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipelines.demo.server import SiteServer
from pipelines.watch import fold_journal, parse_watch_args, watch
from schemas import ARTICLE_SCHEMA, SCHEMA_VERSION, Article
from transforms.feeds.polling import FeedState, classify, kept_keys, listing_keys
from transforms.sinks.parquet import to_rows
from transforms.sinks.state import SeenIndex, StateStore, read_json, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
START = dt.datetime(2024, 11, 23, 10, 0, tzinfo=dt.UTC)

STORIES = {
    "a1": "The town council voted on Tuesday to extend the opening hours of the public library "
          "on weekends, after visitor numbers rose for the third year in a row. The children's "
          "section will also get new shelves and a reading corner before the summer holidays.",
    "a2": "Heavy rain flooded several streets near the river harbour overnight, and firefighters "
          "pumped water out of basements until dawn. The weather service expects the river to "
          "fall slowly over the weekend, but warned of more storms in the coming week.",
    "a3": "A local bakery won the regional bread competition with a sourdough rye loaf that its "
          "owners say took two years to perfect. The prize includes a training trip abroad and "
          "a stand at the national food fair in the capital next spring.",
    "b1": "The football club signed a nineteen-year-old goalkeeper from the youth academy to his "
          "first professional contract. The coach praised his calm under pressure and said he "
          "would start in the cup match against the league leaders on Saturday.",
    "b2": "Engineers began replacing the old steel bridge over the railway line, which will stay "
          "closed to cars for four months. Buses will take a detour through the industrial "
          "estate, and cyclists can use a temporary lane beside the station.",
    "c1": "Researchers at the university hospital reported that a new screening programme found "
          "heart problems earlier in hundreds of patients. They plan to offer the free test in "
          "rural clinics next year if the health ministry agrees to fund it.",
    "c2": "The city orchestra announced a season of open-air concerts in the park, with tickets "
          "at half price for students and pensioners. The programme mixes film music, folk songs "
          "and a new piece written by a composer from the music school.",
    "d1": "Farmers in the valley say the dry autumn has cut the apple harvest by almost a third. "
          "Cooperatives are asking the regional government for help with irrigation, while "
          "cider makers expect prices to rise before the winter markets open.",
}


def rss(title: str, items: list[tuple[str, str]]) -> str:
    """An RSS 2.0 feed; items are (path, title); {{BASE}} is filled in by the server."""
    body = "".join(
        f"<item><title>{t}</title><link>{{{{BASE}}}}{p}</link><guid>{{{{BASE}}}}{p}</guid>"
        f"<pubDate>Sat, 23 Nov 2024 0{i}:00:00 GMT</pubDate><description>{t} summary"
        f"</description></item>" for i, (p, t) in enumerate(items))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{title}</title><link>{{{{BASE}}}}/</link><language>en</language>"
            f"{body}</channel></rss>")


def page(key: str) -> str:
    """An article page with its own story (distinct texts: no near-duplicate matches)."""
    text = STORIES[key]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Story {key}"
            f"</title></head><body><article><h1>Story {key}</h1><p>{text}</p></article>"
            f"</body></html>")


def make_site(folder: Path) -> None:
    for key in STORIES:
        (folder / key[0]).mkdir(parents=True, exist_ok=True)
        (folder / key[0] / f"{key[1]}.html").write_text(page(key))


class FakeClock:
    """Cycle start times: START, then +300 s per cycle (the poll interval in event time)."""

    def __init__(self):
        self.t = START - dt.timedelta(seconds=300)

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(seconds=300)
        return self.t


def _articles(out: Path):
    return ds.dataset(str(out / "articles"), format="parquet", partitioning="hive").to_table()


@pytest.fixture
def world(tmp_path):
    site = tmp_path / "site"
    make_site(site)
    with SiteServer(site) as server:
        server.set_file("/a/feed.xml", rss("Outlet A", [("/a/1.html", "a1"), ("/a/2.html", "a2")]))
        server.set_file("/b/feed.xml", rss("Outlet B", [("/b/1.html", "b1")]))
        server.set_file("/c/feed.xml", rss("Outlet C", [("/c/1.html", "c1")]))
        feeds = tmp_path / "feeds.txt"
        feeds.write_text("\n".join(server.url(f"/{o}/feed.xml") for o in "abc") + "\n")
        yield server, feeds, tmp_path / "out"


def _wait_for(predicate, timeout: float = 120.0) -> bool:
    """Polls ``predicate`` until it holds or ``timeout`` seconds pass (a bounded loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _config(feeds: Path, out: Path, *extra: str):
    return parse_watch_args(["--feeds", str(feeds), "--output", str(out),
                             "--allow-private-network", "--poll-interval", "0.01",
                             "--feed-backoff", "60", "--fetch-threads", "4", *extra])


@pytest.mark.slow
def test_changing_world_writes_every_item_once(world):
    server, feeds, out = world

    def change(cycle):
        if cycle.number == 1:
            # B gains an item; C breaks and asks us to come back in 500 s.
            server.set_file("/b/feed.xml", rss("Outlet B", [("/b/1.html", "b1"),
                                                            ("/b/2.html", "b2")]))
            server.overrides["/c/feed.xml"] = (503, {"Retry-After": "500"}, b"down")
        elif cycle.number == 2:
            # A: a3 appears, a1 drops off. B drops b1 and links A's a1. C is fixed, with c2.
            server.set_file("/a/feed.xml", rss("Outlet A", [("/a/2.html", "a2"),
                                                            ("/a/3.html", "a3")]))
            server.set_file("/b/feed.xml", rss("Outlet B", [("/b/2.html", "b2"),
                                                            ("/a/1.html", "a1 via B")]))
            del server.overrides["/c/feed.xml"]
            server.set_file("/c/feed.xml", rss("Outlet C", [("/c/1.html", "c1"),
                                                            ("/c/2.html", "c2")]))

    printed = io.StringIO()
    report = watch(_config(feeds, out, "--cycles", "4"), clock=FakeClock(), out=printed,
                   on_cycle=change)
    lines = printed.getvalue().splitlines()
    print("\n".join(lines))
    assert [ln.split(" ", 2)[:2] for ln in lines] == [["cycle", str(n)] for n in (1, 2, 3, 4)]
    c1, c2, c3, c4 = report.cycles
    assert report.balanced, lines

    # Cycle by cycle: polls, and new versus unchanged entries.
    assert c1.polls == {"fetched": 3} and c1.entries_new == 4
    assert c2.polls == {"not_modified": 1, "fetched": 1, "failed": 1}
    assert (c2.entries_new, c2.entries_unchanged) == (1, 1)
    assert c2.summary.feed_errors == 1
    assert c3.polls == {"fetched": 2, "backing_off": 1}  # C waits out its Retry-After
    assert (c3.entries_new, c3.entries_unchanged, c3.earlier_duplicates) == (1, 2, 1)
    assert c4.polls == {"not_modified": 2, "fetched": 1}
    assert (c4.entries_new, c4.entries_unchanged, c4.earlier_duplicates) == (1, 1, 0)

    # Every item written exactly once, across all cycles.
    urls = collections.Counter(_articles(out).column("url").to_pylist())
    assert sorted(u.rsplit("/", 2)[-2] + u.rsplit("/", 1)[-1][0] for u in urls) == [
        "a1", "a2", "a3", "b1", "b2", "c1", "c2"]
    assert set(urls.values()) == {1}
    dups = ds.dataset(str(out / "duplicates"), partitioning="hive").to_table().to_pylist()
    assert [(d["url"].endswith("/a/1.html"), d["level"]) for d in dups] == [(True, "url")]

    # Conditional GETs were sent and 304s honoured; pages were fetched once each.
    feed_requests = [r for r in server.requests if r.path.endswith("feed.xml")]
    assert sum(1 for r in feed_requests if r.status == 304) == 3
    assert all(r.conditional for r in feed_requests[3:])
    assert server.count("/c/feed.xml") == 3  # 200, 503, (backing off), 200
    pages = collections.Counter(r.path for r in server.requests if r.path.endswith(".html"))
    assert len(pages) == 7 and set(pages.values()) == {1}

    # State is durable and complete; nothing half-written is visible.
    store = StateStore(str(out))
    assert store.journals() == []
    feeds_state = store.load_feeds()
    assert feeds_state[server.url("/c/feed.xml")]["failures"] == 0
    assert all(s["etag"] for s in feeds_state.values())
    assert not [p for p in (out / "articles").rglob("*") if p.name.startswith(("_", "."))]

    # A restart remembers everything: all 304, nothing written, no page fetched.
    server.clear_requests()
    again = watch(_config(feeds, out, "--cycles", "1"), clock=FakeClock(), out=io.StringIO())
    assert again.cycles[0].polls == {"not_modified": 3}
    assert again.cycles[0].run_id is None
    assert all(r.conditional and r.status == 304 for r in server.requests
               if r.path != "/robots.txt")
    assert _articles(out).num_rows == 7


def _article_row(url: str, feed: str, aid: str) -> Article:
    return Article(
        article_id=aid, url=url, feed_url=feed, source="s", title="t", body="b" * 300,
        body_source="page", authors=[], published_at=START, fetched_at=START, language="en",
        language_confidence=None, topic="unclassified", topic_code=None, topic_source="none",
        categories=[], content_hash="0" * 16, story_id=aid, is_story_lead=True,
        story_similarity=None, date="2024-11-23", schema_version=SCHEMA_VERSION)


def test_fold_journal_marks_only_published_entries(tmp_path):
    """An interrupted cycle: one entry was published, one was not."""
    store = StateStore(str(tmp_path))
    feed = "http://x.test/feed"
    journal = {
        "polled_at": START.timestamp(),
        "feeds": {feed: FeedState(etag='"v2"', last_listing_at=START.timestamp()).to_json()},
        "entries": [[feed, "1" * 16, "http://x.test/1", "g1", "http://x.test/1"],
                    [feed, "2" * 16, "http://x.test/2", "g2", "http://x.test/2"]],
        "touched": [],
    }
    store.write_journal("R1", journal)
    part = tmp_path / "articles" / "date=2024-11-23" / "topic=unclassified"
    part.mkdir(parents=True)
    pq.write_table(to_rows([_article_row("http://x.test/1", feed, "1" * 16)], ARTICLE_SCHEMA),
                   part / "part-R1-g-00000.parquet")
    assert fold_journal(store, str(tmp_path), "R1", journal, dt.timedelta(days=30)) == (1, 1)
    seen = store.load_seen()
    assert f"{feed} u {'1' * 16}" in seen.listed and f"{feed} u {'2' * 16}" not in seen.listed
    assert seen.kept["u http://x.test/1"][0] == "1" * 16
    # The feed's validators are dropped so that the next poll lists entry 2 again.
    assert store.load_feeds()[feed]["etag"] is None
    assert store.journals() == []


def test_classify_and_forget():
    from schemas import Entry

    def entry(feed, url, guid):
        return Entry(entry_id=url[-1] * 16, url=url, link=url, guid=guid, feed_url=feed,
                     source="s", title="t", summary="", content="", published_at=None,
                     authors=(), categories=(), language_hint=None, topic_hint=None,
                     fetched_at=START)

    seen = SeenIndex()
    e1 = entry("F", "http://x/1", "http://x/1")
    assert classify(e1, seen.listed, seen.kept).verdict == "new"
    seen.mark_listed(listing_keys(e1), 100.0)
    seen.keep(kept_keys(e1), e1.entry_id, 100.0)
    assert classify(e1, seen.listed, seen.kept).verdict == "unchanged"
    other = classify(entry("G", "http://x/1", "zzz"), seen.listed, seen.kept)
    assert (other.verdict, other.kept_id, other.level) == ("duplicate", e1.entry_id, "url")
    # Same GUID under a new URL from the same feed: still the same item.
    assert classify(entry("F", "http://x/9", "http://x/1"), seen.listed,
                    seen.kept).verdict == "unchanged"
    # Old and no longer listed (F listed again at 200): forgotten; still listed: kept.
    assert seen.forget_before(150.0, {"F": 200.0}) == 4
    seen.mark_listed(listing_keys(e1), 100.0)
    assert seen.forget_before(150.0, {"F": 50.0}) == 0


def test_state_files_are_replaced_atomically(tmp_path):
    path = tmp_path / "_state" / "x.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert read_json(path, None) == {"a": 2}
    assert os.listdir(path.parent) == ["x.json"]
    assert read_json(tmp_path / "missing.json", {"d": 0}) == {"d": 0}


def test_watch_arguments_are_validated(tmp_path):
    with pytest.raises(SystemExit, match="--articles"):
        parse_watch_args(["--articles", "x.jsonl", "--feeds", "http://a.test/f",
                          "--output", str(tmp_path)])
    with pytest.raises(SystemExit, match="local"):
        parse_watch_args(["--feeds", "http://a.test/f", "--output", "gs://b/out"])
    with pytest.raises(SystemExit, match="poll-interval"):
        parse_watch_args(["--feeds", "http://a.test/f", "--output", str(tmp_path),
                          "--poll-interval", "0"])


@pytest.mark.slow
def test_sigterm_stops_after_publishing_the_cycle(world):
    """The real CLI in a child process: SIGTERM mid-run, clean exit, nothing half-done."""
    server, feeds, out = world
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "watch", "--feeds", str(feeds), "--output",
         str(out), "--allow-private-network", "--poll-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(ln.startswith("cycle 2") for ln in lines):
        time.sleep(0.1)
    assert any(ln.startswith("cycle 1") for ln in lines), (lines, proc.stderr.read())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    reader.join(10)
    assert any("SIGTERM: stopping" in ln for ln in lines)
    assert _articles(out).num_rows == 4
    assert StateStore(str(out)).journals() == []
    assert not (out / "_staging").exists() or not any((out / "_staging").rglob("*.parquet"))


@pytest.mark.slow
def test_abandoned_cycle_loses_nothing_and_doubles_nothing(world):
    """Two SIGINTs abandon cycle 1 wherever it is; the next start writes each item once."""
    server, feeds, out = world
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "watch", "--feeds", str(feeds), "--output",
         str(out), "--allow-private-network", "--poll-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    server.gate = threading.Event()  # cycle 1 waits at the site until the gate opens
    reader.start()
    try:
        # A request held at the site: cycle 1 is running and cannot finish.
        assert _wait_for(lambda: server.held > 0), (lines, proc.poll())
        proc.send_signal(signal.SIGINT)
        assert _wait_for(lambda: any("SIGINT: stopping" in ln for ln in lines)), lines
        proc.send_signal(signal.SIGINT)  # cycle 1 still held: it is abandoned
        rc = proc.wait(timeout=120)
    finally:
        server.gate.set()
        server.gate = None
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    reader.join(10)
    rest = "".join(lines)
    assert rc == 130, (rc, rest, proc.stderr.read())
    assert "abandoned the running cycle" in rest
    printed = io.StringIO()
    report = watch(_config(feeds, out, "--cycles", "1"), clock=FakeClock(), out=printed)
    assert report.balanced
    urls = collections.Counter(_articles(out).column("url").to_pylist())
    assert len(urls) == 4 and set(urls.values()) == {1}, (rc, rest, printed.getvalue())
    assert StateStore(str(out)).journals() == []
    print(f"exit {rc}; after restart: {printed.getvalue().strip()}")


@pytest.mark.slow
def test_transient_page_failures_are_tried_again_in_later_cycles(world):
    """a1 answers 503 once, b1 is gone (404), c1 answers 503 every time: a1 is written in
    cycle 2, b1 is never fetched again, c1 is given up after 3 cycles."""
    server, feeds, out = world
    server.overrides["/a/1.html"] = (503, {}, b"busy")
    server.overrides["/b/1.html"] = (404, {}, b"gone")
    server.overrides["/c/1.html"] = (503, {}, b"busy")

    def change(cycle):
        if cycle.number == 1:
            del server.overrides["/a/1.html"]

    printed = io.StringIO()
    report = watch(_config(feeds, out, "--cycles", "5", "--per-host-delay", "0"),
                   clock=FakeClock(), out=printed, on_cycle=change)
    lines = printed.getvalue().splitlines()
    print("\n".join(lines))
    assert report.balanced, lines
    c1, c2, c3, c4, c5 = report.cycles
    # Cycle 1: a1 and c1 failed transiently and will be tried again; b1's 404 is final.
    assert (c1.entries_new, c1.summary.articles, c1.summary.entry_errors) == (4, 1, 3)
    assert c1.page_retries == 2 and "(2 pages to try again)" in lines[0]
    # Their feeds were fetched in full again (no validators), listing them as new.
    assert c2.polls == {"fetched": 2, "not_modified": 1}
    assert (c2.entries_new, c2.summary.articles, c2.summary.entry_errors) == (2, 1, 1)
    assert c2.page_retries == 1
    assert (c3.entries_new, c3.summary.entry_errors, c3.page_retries) == (1, 1, 0)
    # c1 failed in 3 cycles: its error stands and nothing is polled in full any more.
    assert c4.polls == c5.polls == {"not_modified": 3}
    assert c4.run_id is None and c5.run_id is None

    articles = collections.Counter(
        u.rsplit("/", 2)[-2] + u.rsplit("/", 1)[-1][0]
        for u in _articles(out).column("url").to_pylist())
    assert articles == {"a1": 1, "a2": 1}
    errors = ds.dataset(str(out / "errors"), partitioning="hive").to_table().to_pylist()
    assert collections.Counter((e["url"].rsplit("/", 2)[-2] + e["url"].rsplit("/", 1)[-1][0],
                                e["reason"]) for e in errors) == {
        ("a1", "http_503"): 1, ("b1", "http_404"): 1, ("c1", "http_503"): 3}
    # Page requests: the fetcher's own 3 attempts per cycle, in as many cycles as allowed.
    assert server.count("/a/1.html") == 3 + 1
    assert server.count("/b/1.html") == 1
    assert server.count("/c/1.html") == 3 * 3
    assert read_json(out / "_state" / "retries.json", None) == {}


def test_fold_journal_keeps_transient_page_failures_unseen_until_the_last_attempt(tmp_path):
    """Pure state handling: a 503 leaves the entry unseen for two cycles, not the third;
    a 404 is seen at once; folding the same journal twice counts one attempt."""
    from schemas import ERROR_SCHEMA
    from transforms.util import error_record

    store = StateStore(str(tmp_path))
    feed = "http://x.test/feed"
    entries = [[feed, "1" * 16, "http://x.test/1", "g1", "http://x.test/1"],
               [feed, "2" * 16, "http://x.test/2", "g2", "http://x.test/2"]]
    part = tmp_path / "errors" / "date=2024-11-23"
    part.mkdir(parents=True)

    def cycle(run_id, n):
        journal = {"polled_at": START.timestamp() + n, "entries": entries, "touched": [],
                   "feeds": {feed: FeedState(etag='"v"').to_json()}}
        rows = [error_record("http://x.test/1", feed, "entry", "fetch_page", "http_503", "busy",
                             503, 3, START),
                error_record("http://x.test/2", feed, "entry", "fetch_page", "http_404", "gone",
                             404, 1, START)]
        pq.write_table(to_rows(rows, ERROR_SCHEMA), part / f"part-{run_id}-g-00000.parquet")
        return journal

    for n, run_id in enumerate(["R1", "R2"]):
        journal = cycle(run_id, n)
        assert fold_journal(store, str(tmp_path), run_id, journal, dt.timedelta(days=30),
                            page_attempts=3) == (2, 0)
        if run_id == "R1":  # the same journal again (a crash before it was dropped)
            fold_journal(store, str(tmp_path), run_id, journal, dt.timedelta(days=30), 3)
        seen = store.load_seen()
        assert f"{feed} u {'1' * 16}" not in seen.listed
        assert f"{feed} u {'2' * 16}" in seen.listed
        assert store.load_feeds()[feed]["etag"] is None  # a full GET lists it again
    assert read_json(tmp_path / "_state" / "retries.json", {})[f"{feed} u {'1' * 16}"][
        "runs"] == ["R1", "R2"]
    fold_journal(store, str(tmp_path), "R3", cycle("R3", 2), dt.timedelta(days=30), 3)
    assert f"{feed} u {'1' * 16}" in store.load_seen().listed
    assert store.load_feeds()[feed]["etag"] == '"v"'
    assert read_json(tmp_path / "_state" / "retries.json", None) == {}
