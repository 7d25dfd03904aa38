"""Dead hosts fail fast: DNS and connection failures, and the per-host circuit breaker.

Names under ``.invalid`` (RFC 2606) never resolve. This machine's resolver answers them
with a fast NXDOMAIN (``EAI_NONAME`` in under 5 ms, measured), but the tests inject a
resolver that does the same, so that they neither depend on nor reach any DNS server.
Live hosts are the fault server on 127.0.0.1. Breaker time runs on an injected clock.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import wait

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import FeedSpec
from tests.conftest import article_html, rss
from tests.faults import FaultServer
from transforms.extraction.extract import FetchArticles
from transforms.feeds.parse import ReadFeeds
from transforms.fetching.http import FetchError, FetchPolicy, HttpClient
from transforms.fetching.politeness import HostBreaker, PoliteFetcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def nxdomain(host: str) -> socket.gaierror:
    return socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({host})")


class Resolver:
    """Answers IP literals and ``live`` names with 127.0.0.1; ``.invalid`` names with
    NXDOMAIN until :meth:`revive`; counts the look-ups per name."""

    def __init__(self, live: tuple[str, ...] = ()) -> None:
        self.live = set(live)
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def revive(self, host: str) -> None:
        self.live.add(host)

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.calls[host] = self.calls.get(host, 0) + 1
        if host[0].isdigit() or host in self.live:
            return [host if host[0].isdigit() else "127.0.0.1"]
        raise nxdomain(host)


def loopback_policy(**changes) -> FetchPolicy:
    base = FetchPolicy(allow_private_network=True, connect_timeout=1.0, read_timeout=1.0,
                       total_timeout=3.0, backoff_initial=0.01, backoff_max=0.05,
                       per_host_delay=0.0, breaker_cooldown=60.0)
    return base.replace(**changes)


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the client: what a failed connect is called, and which ones are retried ---------------

def test_nxdomain_is_not_retried_but_a_temporary_dns_failure_is():
    sleep = RecordingSleep()
    client = HttpClient(loopback_policy(), resolver=Resolver(), sleep=sleep)
    with pytest.raises(FetchError) as info:
        client.get("http://gone.invalid/news/1")
    e = info.value
    assert (e.reason, e.attempts, e.transient) == ("dns_error", 1, False)
    assert "does not resolve" in e.message and sleep.waits == []

    def temporary(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    client = HttpClient(loopback_policy(), resolver=temporary, sleep=sleep)
    with pytest.raises(FetchError) as info:
        client.get("http://flaky.invalid/news/1")
    assert (info.value.reason, info.value.attempts) == ("dns_error", 3)
    assert len(sleep.waits) == 2


def test_a_refused_connection_is_named_as_such_not_as_a_timeout():
    sleep = RecordingSleep()
    client = HttpClient(loopback_policy(), sleep=sleep)
    with pytest.raises(FetchError) as info:
        client.get(f"http://127.0.0.1:{closed_port()}/news/1")
    assert (info.value.reason, info.value.attempts) == ("connection_refused", 3)


# -- the breaker on its own ------------------------------------------------------------------

def test_breaker_opens_refuses_probes_and_closes():
    clock = FakeClock()
    breaker = HostBreaker(failures=2, cooldown=10.0, max_cooldown=25.0, clock=clock)
    assert breaker.admit("h") == "closed"
    breaker.record("h", "connection_refused", "refused")
    assert breaker.admit("h") == "closed"  # one failure: below the threshold
    breaker.record("h", None)  # the host answered: the count starts again
    breaker.record("h", "connection_refused", "refused")
    assert breaker.state("h") == "closed"
    breaker.record("h", "dns_error", "does not resolve")
    assert (breaker.state("h"), breaker.admit("h")) == ("open", "open")
    refusal = breaker.refusal("h", "http://h/1")
    assert (refusal.reason, refusal.attempts, refusal.url) == ("dns_error", 0, "http://h/1")
    assert "not tried" in refusal.message and "failed 2 time(s)" in refusal.message
    assert breaker.retry_in("h") == pytest.approx(10.0)
    # Other hosts are not affected; failures that prove the host answers do not count.
    breaker.record("other", "http_503", "busy")
    breaker.record("other", "timeout", "read timeout")
    assert breaker.admit("other") == "closed"

    clock.now += 10.0
    assert breaker.state("h") == "half-open"
    assert breaker.admit("h") == "probe"
    assert breaker.admit("h") == "wait"  # one probe at a time
    breaker.record("h", "dns_error", "still gone")  # the probe failed: twice the cool-down
    assert breaker.admit("h") == "open" and breaker.retry_in("h") == pytest.approx(20.0)
    clock.now += 20.0
    assert breaker.admit("h") == "probe"
    breaker.cancel_probe("h")  # the probe could not start (host full): another may go
    assert breaker.admit("h") == "probe"
    breaker.record("h", "connection_refused", "refused")
    assert breaker.retry_in("h") == pytest.approx(25.0)  # capped
    clock.now += 25.0
    assert breaker.admit("h") == "probe"
    breaker.record("h", None)  # the host is back
    assert (breaker.state("h"), breaker.admit("h")) == ("closed", "closed")
    with pytest.raises(ValueError):
        HostBreaker(failures=0)


# -- the fetcher: a dead host's queue drains at once; a revived host is used again ----------

def test_an_unresolvable_host_fails_its_queue_fast_and_is_used_again_once_back(server):
    clock = FakeClock()
    resolver = Resolver()
    fetcher = PoliteFetcher(loopback_policy(per_host_concurrency=2), threads=4,
                            resolver=resolver, clock=clock, sleep=RecordingSleep())
    dead = f"dead.invalid:{server.port}"
    try:
        gone = [fetcher.submit(f"http://{dead}/article/{i}") for i in range(20)]
        live = [fetcher.submit(f"http://127.0.0.1:{server.port}/article/{i}")
                for i in range(5)]
        done, pending = wait(gone + live, timeout=30)
        assert not pending
        assert all(f.result().status == 200 for f in live)
        errors = [f.exception() for f in gone]
        assert all(isinstance(e, FetchError) and e.reason == "dns_error" for e in errors)
        tried = [e for e in errors if e.attempts == 1]
        refused = [e for e in errors if e.attempts == 0]
        # At most one look-up per request that was in flight when the breaker opened.
        assert 1 <= resolver.calls["dead.invalid"] <= 2
        assert 1 <= len(tried) <= 2 and len(refused) == 20 - len(tried)
        assert all("not tried" in e.message for e in refused)
        assert fetcher.breaker.refused == len(refused)
        assert fetcher.breaker.state(dead) == "open"
        assert server.hits.get((dead, "/robots.txt"), 0) == 0

        # Still open: fails at once with no look-up.
        calls = resolver.calls["dead.invalid"]
        e = fetcher.submit(f"http://{dead}/article/late").exception(timeout=10)
        assert (e.reason, e.attempts) == ("dns_error", 0)
        assert resolver.calls["dead.invalid"] == calls

        # The name resolves again; after the cool-down one probe goes, then all.
        resolver.revive("dead.invalid")
        clock.now += 60.0
        back = [fetcher.submit(f"http://{dead}/article/{i}") for i in range(5)]
        done, pending = wait(back, timeout=30)
        assert not pending and all(f.result().status == 200 for f in back)
        assert fetcher.breaker.state(dead) == "closed"
        assert server.hits[(dead, "/robots.txt")] == 1
    finally:
        fetcher.close()


def test_a_redirect_to_a_dead_host_does_not_open_the_breaker_of_the_host_that_answered(
        server):
    fetcher = PoliteFetcher(loopback_policy(), threads=2, resolver=Resolver(),
                            clock=FakeClock(), sleep=RecordingSleep())
    live = f"127.0.0.1:{server.port}"
    server.redirects["away"] = "http://moved.invalid/news/1"
    try:
        e = fetcher.submit(f"http://{live}/redirect/away").exception(timeout=10)
        assert (e.reason, e.failed_host) == ("dns_error", "moved.invalid")
        assert fetcher.breaker.state(live) == "closed"
        assert fetcher.fetch(f"http://{live}/article/1").status == 200
    finally:
        fetcher.close()


def test_a_host_refusing_connections_fails_its_queue_fast():
    port = closed_port()
    sleep = RecordingSleep()
    fetcher = PoliteFetcher(loopback_policy(per_host_concurrency=1), threads=4,
                            clock=FakeClock(), sleep=sleep)
    try:
        futures = [fetcher.submit(f"http://127.0.0.1:{port}/article/{i}") for i in range(10)]
        done, pending = wait(futures, timeout=30)
        assert not pending
        errors = [f.exception() for f in futures]
        assert {e.reason for e in errors} == {"connection_refused"}
        # The first request (its robots.txt) made its 3 attempts; the rest were not sent.
        assert sorted(e.attempts for e in errors) == [0] * 9 + [3]
        assert len(sleep.waits) == 2
    finally:
        fetcher.close()


# -- in the pipeline: every entry accounted for --------------------------------------------

DEAD_HOSTS = [f"gone-{i}.pipeline-breaker.invalid" for i in range(3)]


def pipeline_resolver(host: str, port: int) -> list[str]:
    """IP literals only; every other name is NXDOMAIN (module level: it is pickled)."""
    if host[0].isdigit():
        return [host]
    raise nxdomain(host)


def test_feeds_whose_items_point_at_dead_hosts_account_for_every_entry(pages_server):
    items = [{"title": f"Dead {h} {i}", "link": f"http://{h}/news/{i}.html",
              "guid": f"http://{h}/news/{i}.html"} for h in DEAD_HOSTS for i in range(4)]
    text = ("The river rose through the night and the bridge was closed to traffic while "
            "engineers checked its pillars. ") * 4
    pages_server.add("/live.html", article_html("Live story", [text]))
    items.append({"title": "Live", "link": pages_server.base_url + "/live.html",
                  "guid": "live-1"})
    feed_url = pages_server.add("/feed.xml", rss("Mixed", items), "application/rss+xml")
    dead_feed = f"http://{DEAD_HOSTS[0]}/feed.xml"
    policy = loopback_policy(per_host_delay=0.0)
    with TestPipeline() as p:
        feeds = (p | beam.Create([FeedSpec(url=feed_url), FeedSpec(url=dead_feed)])
                 | ReadFeeds(policy, threads=4, resolver=pipeline_resolver))
        pages = feeds.entries | FetchArticles(policy, threads=4, resolver=pipeline_resolver)
        assert_that(pages.articles | "Urls" >> beam.Map(lambda a: a.url),
                    equal_to([pages_server.base_url + "/live.html"]), label="articles")
        assert_that(
            pages.errors | "PageReasons" >> beam.Map(lambda e: (e.level, e.stage, e.reason)),
            equal_to([("entry", "fetch_page", "dns_error")] * 12), label="page_errors")
        assert_that(
            feeds.errors | "FeedReasons" >> beam.Map(lambda e: (e.url, e.level, e.reason)),
            equal_to([(dead_feed, "feed", "dns_error")]), label="feed_errors")
