"""The continuous modes fetch feeds politely: robots.txt and per-host spacing.

``PollFeedFn`` (the streaming poller) and ``newsbeam watch`` are run against a loopback
site that records when each request arrived and whose robots.txt disallows one feed.
The disallowed feed must never be requested and must become one ``robots_disallowed``
feed error; two requests to the site (feeds and, in watch, pages) must never start
closer together than the per-host delay.
"""

from __future__ import annotations

import collections
import datetime as dt
import io

import apache_beam as beam
import pyarrow.dataset as ds
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.demo.server import SiteServer
from pipelines.watch import parse_watch_args, watch
from schemas import FeedSpec
from transforms.feeds.polling import PollFeedFn
from transforms.fetching.http import FetchPolicy

START = dt.datetime(2024, 11, 23, 10, 0, tzinfo=dt.UTC)
DELAY = 0.4
SLACK = 0.1
"""Arrival times at the server lag start times by connection set-up, a lag that varies
on a loaded machine: each gap must be at least half the delay, and the span of n
requests at least (n - 1) delays, less this slack (lags cancel out over the span)."""
ROBOTS = "User-agent: *\nDisallow: /private/\n"
TEXT = ("Workers finished the new tram line after two years, and the first trams will run "
        "on Monday morning. The city expects twelve thousand passengers a day and plans a "
        "second line to the airport if the first one proves popular with commuters. ")


class RecordingSite(SiteServer):
    """Feeds, pages and a robots.txt on the project's loopback server, which logs when
    each request arrived (:attr:`log`: ``(arrival time, path, status)``)."""

    def __init__(self, feeds: int = 3, items: int = 2):
        super().__init__(root=None)
        self._feeds: list[str] = []
        self.base = self.start().base_url
        self.set_file("/robots.txt", ROBOTS)
        for f in range(feeds):
            self._feed(f"/feeds/{f}.xml", [f"/news/{f}-{i}.html" for i in range(items)])
            for i in range(items):
                self.set_file(f"/news/{f}-{i}.html", (
                    f"<html lang='en'><head><title>Story {f}-{i}</title></head><body><article>"
                    f"<h1>Story {f}-{i}</h1><p>Story {f}-{i}. {TEXT * (f + 1)}</p>"
                    f"</article></body></html>"))
        self._feed("/private/feed.xml", ["/news/secret.html"])

    def _feed(self, path: str, links: list[str]) -> None:
        items = "".join(
            f"<item><title>Item {link}</title><link>{self.base}{link}</link>"
            f"<guid>{self.base}{link}</guid><pubDate>Sat, 23 Nov 2024 08:00:00 GMT</pubDate>"
            f"<description>Summary of {link}</description></item>" for link in links)
        self.set_file(path, (
            f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>Feed {path}</title><link>{self.base}/</link>{items}</channel></rss>"))
        self._feeds.append(self.base + path)

    def feed_urls(self) -> list[str]:
        return sorted(self._feeds)

    @property
    def log(self) -> list[tuple[float, str, int]]:
        return [(at, r.path, r.status)
                for at, r in zip(self.arrivals, self.requests, strict=True)]

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests other than robots.txt, by arrival."""
        times = sorted(t for t, path, _ in self.log if path != "/robots.txt")
        return [b - a for a, b in zip(times, times[1:], strict=False)]


def assert_spaced(gaps: list[float], count: int) -> None:
    assert len(gaps) == count, gaps
    assert min(gaps) >= DELAY / 2, gaps
    assert sum(gaps) >= count * DELAY - SLACK, gaps


def test_poll_feed_fn_honours_robots_txt_spacing_and_validators():
    policy = FetchPolicy(allow_private_network=True, per_host_concurrency=1,
                         per_host_delay=DELAY, backoff_initial=0.01, backoff_max=0.05)
    with RecordingSite() as site:
        private = site.base + "/private/feed.xml"
        first = site.base + "/feeds/0.xml"
        polls = [(START.timestamp(), url) for url in site.feed_urls()]
        polls.append((START.timestamp() + 300, first))  # a second poll: conditional
        with TestPipeline() as p:
            out = (p | beam.Create(polls)
                   | beam.Map(lambda tu: TimestampedValue((tu[1], FeedSpec(url=tu[1])), tu[0]))
                   | beam.ParDo(PollFeedFn(policy)).with_outputs("errors", main="entries"))
            assert_that(out.errors | "Reasons" >> beam.Map(
                lambda e: (e.url, e.level, e.stage, e.reason, e.attempts)),
                equal_to([(private, "feed", "fetch_feed", "robots_disallowed", 0)]),
                label="errors")
            assert_that(out.entries | "Count" >> beam.combiners.Count.Globally(),
                        equal_to([3 * 2]), label="entries")
        paths = collections.Counter(path for _, path, _ in site.log)
    assert "/private/feed.xml" not in paths
    assert paths["/robots.txt"] >= 1
    assert paths["/feeds/0.xml"] == 2
    assert sorted(s for _, path, s in site.log if path == "/feeds/0.xml") == [200, 304]
    assert_spaced(site.gaps(), 3)


class FakeClock:
    def __init__(self):
        self.t = START - dt.timedelta(seconds=300)

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(seconds=300)
        return self.t


def test_watch_polls_and_fetches_pages_under_robots_txt_and_spacing(tmp_path):
    out = tmp_path / "out"
    with RecordingSite(feeds=2, items=2) as site:
        feeds = tmp_path / "feeds.txt"
        feeds.write_text("\n".join(site.feed_urls()) + "\n")
        config = parse_watch_args([
            "--feeds", str(feeds), "--output", str(out), "--allow-private-network",
            "--cycles", "1", "--poll-interval", "0.01", "--per-host-delay", str(DELAY),
            "--per-host-concurrency", "1", "--fetch-threads", "4"])
        report = watch(config, clock=FakeClock(), out=io.StringIO())
        log = list(site.log)
        gaps = site.gaps()
    cycle = report.cycles[0]
    assert cycle.polls == {"fetched": 2, "failed": 1}
    # (The test pages tell one story: some end as near copies. What counts here is that
    # every entry is accounted for.)
    assert report.balanced and cycle.summary.articles + cycle.summary.duplicates == 4
    paths = collections.Counter(path for _, path, _ in log)
    assert not [p for p in paths if p.startswith("/private/")]
    assert sum(n for p, n in paths.items() if p.startswith("/news/")) == 4
    # Feeds and pages, polled and fetched by different fetchers, share the host's spacing.
    assert_spaced(gaps, 2 + 4 - 1)
    errors = ds.dataset(str(out / "errors"), partitioning="hive").to_table().to_pylist()
    assert [(e["url"], e["level"], e["reason"], e["attempts"]) for e in errors] == [
        (site.base + "/private/feed.xml", "feed", "robots_disallowed", 0)]
