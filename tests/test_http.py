"""The HTTP client and the per-host manners, against the fault server on loopback.

Test hostnames (``public.test``, ``other.test``) are pinned to 127.0.0.1 through
``FetchPolicy.host_overrides`` with the private-network guard left ON, so that every
redirect hop to 127.0.0.1, localhost or 169.254.169.254 really meets the SSRF guard.
Waits go through an injected ``sleep`` that records instead of sleeping.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from concurrent.futures import wait

import pytest

from tests.faults import PNG, FaultServer, article_page, gzip_bomb
from transforms.fetching.http import (
    DEFAULT_USER_AGENT,
    FetchError,
    FetchPolicy,
    HttpClient,
    address_is_public,
    decode_html,
    looks_binary,
    parse_retry_after,
    user_agent_for,
)
from transforms.fetching.politeness import HostLimiter, HostScheduler, PoliteFetcher

PINNED = (("public.test", "127.0.0.1"), ("other.test", "127.0.0.1"))
PAGE_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


def policy(**changes) -> FetchPolicy:
    """A policy for loopback tests: short timeouts and backoff, no per-host delay."""
    base = FetchPolicy(host_overrides=PINNED, connect_timeout=1.0, read_timeout=1.0,
                       total_timeout=3.0, backoff_initial=0.01, backoff_max=0.05,
                       max_retry_after=10.0, per_host_delay=0.0)
    return base.replace(**changes)


class SteppingClock:
    """Stands in for ``time.monotonic``: each reading is ``step`` seconds after the last."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class RecordingSleep:
    """Stands in for ``time.sleep``: records the waits, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def server():
    with FaultServer(stall_seconds=10.0) as s:
        yield s


@pytest.fixture
def sleep():
    return RecordingSleep()


@pytest.fixture
def client(sleep):
    c = HttpClient(policy(), sleep=sleep)
    yield c
    c.close()


def fail(client: HttpClient, url: str, **kw) -> FetchError:
    with pytest.raises(FetchError) as info:
        client.get(url, **kw)
    return info.value


# -- pure functions ------------------------------------------------------------------------

@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("127.8.9.1", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("224.0.0.1", False), ("240.0.0.1", False), ("0.0.0.0", False),
    ("255.255.255.255", False), ("::1", False), ("fe80::1", False), ("fd00::1", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False),
])
def test_address_is_public(address, public):
    assert address_is_public(address) is public


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    when = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(when, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_looks_binary():
    assert looks_binary(PNG)
    assert looks_binary(b"%PDF-1.7 ...")
    assert looks_binary(b"abc\x00def")
    assert not looks_binary("<p>Привет</p>".encode())
    assert not looks_binary("<p>hi</p>".encode("utf-16"))  # BOM, then NULs


def test_user_agent_names_project_and_contact():
    assert DEFAULT_USER_AGENT.startswith("newsbeam/")
    assert user_agent_for("mailto:ops@example.org") == "newsbeam/0.1 (+mailto:ops@example.org)"


RU = "Новости дня: в городе открыли новую библиотеку, и читатели пришли с утра."
UK = "Школи Харківщини повертаються до очного навчання після ремонту укриттів."


@pytest.mark.parametrize("body, headers, expected", [
    # Header claims ISO-8859-1, bytes are UTF-8 (a common server default).
    (RU.encode("utf-8"), {"content-type": "text/html; charset=iso-8859-1"}, RU),
    # Header claims ISO-8859-1, bytes are windows-1251.
    (RU.encode("cp1251"), {"content-type": "text/html; charset=ISO-8859-1"}, RU),
    (UK.encode("cp1251"), {"content-type": "text/html; charset=latin1"}, UK),
    # No charset anywhere, windows-1251 bytes.
    (UK.encode("cp1251"), {"content-type": "text/html"}, UK),
    # Only a <meta> names the charset.
    (f'<meta charset="windows-1251"><p>{RU}</p>'.encode("cp1251"), {}, RU),
    # Unknown charset name in the header.
    (RU.encode("cp1251"), {"content-type": "text/html; charset=x-no-such"}, RU),
    # Correct Latin-1 declaration for French text stays Latin-1.
    ("Une épée à la fenêtre, déjà vue à Orléans.".encode("latin-1"),
     {"content-type": "text/html; charset=iso-8859-1"},
     "Une épée à la fenêtre, déjà vue à Orléans."),
    # UTF-16 with a byte-order mark.
    (RU.encode("utf-16"), {}, RU),
])
def test_decode_html_distrusts_wrong_charsets(body, headers, expected):
    assert expected in decode_html(body, headers)


# -- the client against the fault server ---------------------------------------------------

def test_ok_with_user_agent(server, client):
    response = client.get(server.url("public.test", "/article/one"))
    assert response.status == 200 and b"Article /article/one" in response.body
    assert response.attempts == 1
    assert server.user_agents == {DEFAULT_USER_AGENT}


def test_500_is_retried_with_backoff_then_recorded(server, client, sleep):
    e = fail(client, server.url("public.test", "/status/500"))
    assert (e.reason, e.status, e.attempts) == ("http_500", 500, 3)
    assert len(sleep.waits) == 2
    assert 0.005 <= sleep.waits[0] <= 0.01 and 0.01 <= sleep.waits[1] <= 0.02  # jittered


def test_flaky_server_recovers(server, client):
    response = client.get(server.url("public.test", "/flaky/2/k"))
    assert response.attempts == 3


@pytest.mark.parametrize("code", [404, 410, 403])
def test_permanent_errors_are_not_retried(server, client, sleep, code):
    e = fail(client, server.url("public.test", f"/status/{code}"))
    assert (e.reason, e.attempts, sleep.waits) == (f"http_{code}", 1, [])


def test_retry_after_is_honoured(server, client, sleep):
    response = client.get(server.url("public.test", "/retry-after/4/a"))
    assert response.attempts == 2
    assert sleep.waits == [4.0]


def test_retry_after_beyond_the_cap_gives_up_at_once(server, client, sleep):
    e = fail(client, server.url("public.test", "/always-429/3600"))
    assert (e.reason, e.attempts, sleep.waits) == ("http_429", 1, [])


def test_always_429_is_retried_then_recorded(server, client, sleep):
    e = fail(client, server.url("public.test", "/always-429/2"))
    assert (e.reason, e.status, e.attempts) == ("http_429", 429, 3)
    assert sleep.waits == [2.0, 2.0]


def test_stalled_body_times_out(server):
    # The server stalls for 10 s and would then finish the body: only the read timeout
    # makes this a timeout.
    c = HttpClient(policy(read_timeout=0.5, max_attempts=1))
    e = fail(c, server.url("public.test", "/stall"))
    assert e.reason == "timeout" and e.transient


def test_trickling_body_meets_the_total_deadline(server):
    # Each byte arrives well within the read timeout; only the total deadline stops it.
    # The deadline is measured by the injected clock: 0.3 s a reading, so the 1 s total
    # is spent after a few bytes however fast or slow the machine is.
    clock = SteppingClock(0.3)
    c = HttpClient(policy(read_timeout=1.0, total_timeout=1.0, max_attempts=1), clock=clock)
    e = fail(c, server.url("public.test", "/trickle"))
    assert (e.reason, e.message) == ("timeout", "total deadline exceeded while reading")
    assert clock.now < 3.0  # cut within a few readings, not at the end of 400 bytes


def test_connection_reset_mid_body(server, client):
    e = fail(client, server.url("public.test", "/reset"))
    assert (e.reason, e.attempts) == ("connection_error", 3)


def test_gzip(server, client):
    assert b"Article /gzip-ok" in client.get(server.url("public.test", "/gzip-ok")).body
    e = fail(client, server.url("public.test", "/truncated-gzip"))
    assert (e.reason, e.attempts) == ("bad_compression", 1)


def test_gzip_bomb_is_defused(server, sleep):
    # A clock that stands still and a bomb built before the request: however slow the
    # machine, only the size limit can stop this response (with the real clock a loaded
    # machine could hit the total deadline, or the read timeout while the server builds
    # the bomb).
    gzip_bomb()
    c = HttpClient(policy(read_timeout=30.0), sleep=sleep, clock=lambda: 0.0)
    try:
        e = fail(c, server.url("public.test", "/gzip-bomb"))
    finally:
        c.close()
    assert (e.reason, e.attempts) == ("decompression_bomb", 1)


def test_huge_bodies_are_cut(server, client):
    e = fail(client, server.url("public.test", "/huge"))
    assert (e.reason, e.attempts) == ("too_large", 1)
    e = fail(client, server.url("public.test", "/huge-declared"))
    assert (e.reason, e.attempts) == ("too_large", 1)
    small = HttpClient(policy(max_bytes=200))
    e = fail(small, server.url("public.test", "/article/x"))
    assert e.reason == "too_large"


def test_content_types(server, client):
    e = fail(client, server.url("public.test", "/binary"), allowed_types=PAGE_TYPES)
    assert (e.reason, e.attempts) == ("bad_content_type", 1)
    e = fail(client, server.url("public.test", "/binary"), refused_types=("image/",))
    assert e.reason == "bad_content_type"
    e = fail(client, server.url("public.test", "/binary-as-html"), allowed_types=PAGE_TYPES,
             sniff_binary=True)
    assert (e.reason, e.attempts) == ("binary_content", 1)


def test_redirect_loops_and_chains(server, client):
    e = fail(client, server.url("public.test", "/loop/a"))
    assert (e.reason, e.attempts) == ("redirect_loop", 1)
    e = fail(client, server.url("public.test", "/chain/0"))
    assert (e.reason, e.attempts) == ("too_many_redirects", 1)
    # Five redirects are followed, a sixth is not.
    server.redirects["six"] = "/chain/95"
    assert fail(client, server.url("public.test", "/redirect/six")).reason == \
        "too_many_redirects"
    server.add("/chain/95", article_page("end"))
    assert client.get(server.url("public.test", "/chain/90")).status == 200


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/article/secret",
    "http://localhost:{port}/article/secret",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/article/secret",
    "http://10.0.0.1/admin",
    "http://0.0.0.0:{port}/article/secret",
])
def test_ssrf_guard_checks_every_redirect_hop(server, client, target):
    server.redirects["r"] = target.format(port=server.port)
    e = fail(client, server.url("public.test", "/redirect/r"))
    assert (e.reason, e.attempts) == ("blocked_address", 1)
    assert (f"127.0.0.1:{server.port}", "/article/secret") not in server.hits
    assert (f"localhost:{server.port}", "/article/secret") not in server.hits


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://public.test/x",
                                    "data:text/html,hi", "gopher://public.test/"])
def test_other_schemes_are_refused(server, client, target):
    assert fail(client, target).reason == "unsupported_scheme"
    server.redirects["s"] = target
    assert fail(client, server.url("public.test", "/redirect/s")).reason == "unsupported_scheme"


def test_private_addresses_need_the_flag(server):
    url = f"http://127.0.0.1:{server.port}/article/x"
    assert fail(HttpClient(policy(host_overrides=())), url).reason == "blocked_address"
    assert HttpClient(policy(allow_private_network=True)).get(url).status == 200


def test_resolver_answers_are_all_checked(server):
    # A name with one public and one private answer is refused (DNS rebinding).
    answers = {"mixed.test": ["93.184.216.34", "10.0.0.7"], "inner.test": ["192.168.0.2"]}
    c = HttpClient(policy(), resolver=lambda host, port: answers[host])
    assert fail(c, "http://mixed.test/").reason == "blocked_address"
    assert fail(c, "http://inner.test/").reason == "blocked_address"


# -- per-host manners ----------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_host_limiter_counts_and_spaces():
    clock = FakeClock()
    limiter = HostLimiter(max_concurrent=2, min_delay=1.0, clock=clock)
    assert limiter.try_acquire("a") == 0
    assert limiter.try_acquire("a") == pytest.approx(1.0)  # too soon
    assert limiter.try_acquire("b") == 0  # other hosts are independent
    clock.now += 1.0
    assert limiter.try_acquire("a") == 0
    clock.now += 5
    assert math.isinf(limiter.try_acquire("a"))  # two in flight
    limiter.release("a")
    assert limiter.try_acquire("a") == 0
    limiter.set_delay("a", 3.0)
    clock.now += 10
    limiter.release("a")
    assert limiter.try_acquire("a") == 0
    limiter.release("a")
    clock.now += 2
    assert limiter.try_acquire("a") == pytest.approx(1.0)
    assert limiter.peak["a"] == 2


def test_scheduler_respects_limits_and_one_slow_host_does_not_stall_others():
    limiter = HostLimiter(max_concurrent=2, min_delay=0.0)
    scheduler = HostScheduler(limiter, threads=4)
    running: dict[str, int] = {"slow": 0, "fast": 0}
    peak: dict[str, int] = {"slow": 0, "fast": 0}
    lock = threading.Lock()
    release_slow = threading.Event()

    def task(host: str) -> float:
        with lock:
            running[host] += 1
            peak[host] = max(peak[host], running[host])
        if host == "slow":
            release_slow.wait(5)
        else:
            time.sleep(0.01)
        with lock:
            running[host] -= 1
        return time.monotonic()

    try:
        slow = [scheduler.submit("slow", task, "slow") for _ in range(6)]  # queued first
        fast = [scheduler.submit("fast", task, "fast") for _ in range(20)]
        done, not_done = wait(fast, timeout=3)
        assert not not_done, "fast host was stalled behind the slow one"
        assert not any(f.done() for f in slow[2:])
        release_slow.set()
        wait(slow, timeout=5)
        assert all(f.done() for f in slow)
        assert peak == {"slow": 2, "fast": 2}
    finally:
        release_slow.set()
        scheduler.shutdown()


def test_polite_fetcher_spaces_requests(server):
    fetcher = PoliteFetcher(policy(per_host_delay=0.25, respect_robots=False), threads=4)
    try:
        start = time.monotonic()
        futures = [fetcher.submit(server.url("public.test", f"/article/{i}")) for i in range(4)]
        wait(futures, timeout=10)
        assert all(f.result().status == 200 for f in futures)
        assert time.monotonic() - start >= 0.74  # starts at 0, .25, .5, .75
    finally:
        fetcher.close()


def test_robots_txt_is_fetched_once_and_honoured(server):
    fetcher = PoliteFetcher(policy(per_host_concurrency=4), threads=8)
    try:
        futures = [fetcher.submit(server.url("public.test", f"/article/{i}")) for i in range(12)]
        futures.append(fetcher.submit(server.url("public.test", "/private/report")))
        wait(futures, timeout=10)
        assert all(f.result().status == 200 for f in futures[:-1])
        e = futures[-1].exception()
        assert isinstance(e, FetchError)
        assert (e.reason, e.attempts) == ("robots_disallowed", 0)
        assert server.hits[(f"public.test:{server.port}", "/robots.txt")] == 1
        assert (f"public.test:{server.port}", "/private/report") not in server.hits
    finally:
        fetcher.close()


def test_robots_outcomes(server):
    fetcher = PoliteFetcher(policy(max_crawl_delay=2.0), threads=2)
    host = f"public.test:{server.port}"
    try:
        server.add("/robots.txt", "User-agent: newsbeam\nDisallow: /only-us/\nCrawl-delay: 5\n"
                   "\nUser-agent: *\nDisallow: /\n", content_type="text/plain")
        assert fetcher.fetch(server.url("public.test", "/article/a")).status == 200
        assert fetcher.limiter.delay_for(host) == 2.0  # Crawl-delay, capped
        with pytest.raises(FetchError, match="robots"):
            fetcher.fetch(server.url("public.test", "/only-us/x"))
        # robots.txt answering 5xx: the host is off limits (RFC 9309).
        server.add("/robots.txt", "", status=503)
        e = fetcher.submit(server.url("other.test", "/article/b")).exception()
        assert (e.reason, e.attempts) == ("robots_unreachable", 0)
    finally:
        fetcher.close()
    # robots.txt answering 404: everything is allowed.
    fetcher = PoliteFetcher(policy(), threads=2)
    try:
        server.add("/robots.txt", "", status=404)
        assert fetcher.fetch(server.url("public.test", "/private/x")).status == 200
    finally:
        fetcher.close()


def test_cli_options_reach_the_policy(tmp_path):
    from pipelines.ingest import parse_args

    config, _ = parse_args(["--feeds", "https://example.org/rss", "--output", str(tmp_path),
                            "--per-host-concurrency", "3", "--per-host-delay", "0.5",
                            "--contact-url", "mailto:ops@example.org",
                            "--max-retry-after", "30"])
    p = config.policy
    assert (p.per_host_concurrency, p.per_host_delay, p.max_retry_after) == (3, 0.5, 30.0)
    assert p.user_agent == "newsbeam/0.1 (+mailto:ops@example.org)"
    default, _ = parse_args(["--feeds", "https://example.org/rss", "--output", str(tmp_path)])
    assert default.policy.user_agent == DEFAULT_USER_AGENT
    assert (default.policy.per_host_concurrency, default.policy.per_host_delay) == (2, 1.0)
    with pytest.raises(SystemExit, match="per-host-concurrency"):
        parse_args(["--feeds", "https://example.org/rss", "--output", str(tmp_path),
                    "--per-host-concurrency", "0"])
