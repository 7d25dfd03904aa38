"""Per-host manners for the fetch stages: concurrency, spacing and robots.txt.

Size: about 700 lines, kept in one module on purpose: the per-host scheduler, the
robots.txt cache, the circuit breaker and the fetch DoFn base decide together when one
request may start, under one lock and one per-worker ``HostState`` (shared through Beam's
``Shared``); the kill and hostile-input tests exercise them as one. The breaker and the DoFn
base are the parts with the thinnest ties and the ones to move out first if it grows.

A :class:`PoliteFetcher` is what a fetching DoFn opens in ``setup()``. Requests are
queued per host and started by a small pool of worker threads only when their host has
room: at most ``per_host_concurrency`` requests in flight and at least ``per_host_delay``
seconds (or the host's robots.txt ``Crawl-delay``, capped) between two starts. Because
a thread never waits for a busy host while another host has work, one slow or
rate-limited host cannot stall the rest.

Every feed and page fetch of every mode goes through this class: the batch feed stage
(``FetchFeedsFn``), the page stage (``FetchPagesFn``), the streaming poller
(``PollFeedFn``) and ``newsbeam watch``'s poller. The limits and the circuit breaker are
shared by all fetchers of one worker process (one :class:`HostLimiter` and one
:class:`HostBreaker` per setting); many worker processes each keep their own, so divide
the settings accordingly when a site's limit must hold cluster-wide.

A host that cannot be reached at all (its name does not resolve, it refuses or cannot
route connections) opens its :class:`HostBreaker`: its queued requests then fail at once,
each with its own error, instead of each waiting for a slot, the spacing and its retries;
after a cool-down one probe request finds out whether the host is back.

What the limiter counts is the entry's host; a redirect to another host is followed in
the same slot, and robots.txt is checked for the URL the feed gave, not for every hop.

Example::

    fetcher = PoliteFetcher(FetchPolicy(per_host_delay=0.5), threads=16)
    future = fetcher.submit("https://example.org/news/1")
    response = future.result()   # raises FetchError
    fetcher.close()
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.utils.shared import Shared
from protego import Protego

from transforms.fetching.http import (
    HOST_DOWN_REASONS,
    PRODUCT_TOKEN,
    FetchError,
    FetchPolicy,
    HttpClient,
    Response,
)
from transforms.fetching.urls import host_of, is_http_url

_LOG = logging.getLogger(__name__)
MAX_QUEUED = 2048
"""Elements a fetching DoFn queues before ``process`` waits for results. A deep queue
lets work for hosts listed late start early (the scheduler only sees what is queued);
its cost is memory for the queued elements, a few KB each."""
ROBOTS_MAX_BYTES = 512 * 1024
"""RFC 9309 asks crawlers to read at least 500 KiB of a robots.txt."""
ROBOTS_TTL = 24 * 3600.0
"""RFC 9309: a cached robots.txt should not be used for more than 24 hours."""


FULL_HOST_RECHECK = 0.05
"""Seconds a scheduler waits before looking again at hosts that were all full."""

class HostState:
    """The per-host limiters and circuit breakers of one worker process, by setting.

    Shared by the feed and page stages through :func:`host_state`: without it each stage
    (and each DoFn instance) would keep its own count, a host could see the feed fetcher
    and the page fetcher at once above the configured limit, and a host found dead by the
    feed stage would not be dead for the page stage.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limiters: dict[tuple[int, float], HostLimiter] = {}
        self._breakers: dict[tuple[int, float, float], HostBreaker] = {}

    def limiter(self, max_concurrent: int, min_delay: float) -> HostLimiter:
        """The process's limiter for this setting."""
        key = (max_concurrent, min_delay)
        with self._lock:
            if key not in self._limiters:
                self._limiters[key] = HostLimiter(max_concurrent, min_delay)
            return self._limiters[key]

    def breaker(self, failures: int, cooldown: float, max_cooldown: float) -> HostBreaker:
        """The process's circuit breaker for this setting."""
        key = (failures, cooldown, max_cooldown)
        with self._lock:
            if key not in self._breakers:
                self._breakers[key] = HostBreaker(failures, cooldown, max_cooldown)
            return self._breakers[key]


_HOST_STATE = Shared()
"""Handle of :class:`HostState`: one per worker process (created where the module is
imported), held by every :class:`PoliteFetcher` of that process."""


def host_state() -> HostState:
    """This worker process's :class:`HostState`; keep a reference while fetching (it
    lives as long as one fetcher of the process holds it)."""
    return _HOST_STATE.acquire(HostState)


@dataclass
class _Trip:
    """Why and since when one host's breaker counts failures or is open."""

    reason: str
    message: str
    failures: int = 0
    opened_at: float | None = None
    cooldown: float = 0.0
    probing: bool = False


class HostBreaker:
    """A circuit breaker per host: closed, open (fail at once) or half-open (one probe).

    ``failures`` requests in a row that end in a host-level failure (the name does not
    resolve, the connection is refused or the host is unreachable; see
    :data:`~transforms.fetching.http.HOST_DOWN_REASONS`) open the host's breaker. While it is open,
    every request for that host fails at once, without a connection, a retry or a
    per-host slot, with the reason that opened it. After ``cooldown`` seconds one request
    goes through as a probe (the others wait in their queue): if the host answers at all
    (any HTTP status) the breaker closes, otherwise it opens again for twice as long, up
    to ``max_cooldown``. Thread-safe.
    """

    CLOSED, OPEN, PROBE, WAIT = "closed", "open", "probe", "wait"

    def __init__(self, failures: int = 1, cooldown: float = 60.0, max_cooldown: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._trips: dict[str, _Trip] = {}
        self.refused = 0
        """Requests failed at once by an open breaker (for benchmarks and tests)."""

    def admit(self, host: str) -> str:
        """``closed``: go; ``open``: fail now; ``probe``: go as the one probe (call
        :meth:`cancel_probe` if it cannot start after all); ``wait``: a probe is out."""
        with self._lock:
            trip = self._trips.get(host)
            if trip is None or trip.opened_at is None:
                return self.CLOSED
            if trip.probing:
                return self.WAIT
            if self._clock() - trip.opened_at < trip.cooldown:
                return self.OPEN
            trip.probing = True
            return self.PROBE

    def cancel_probe(self, host: str) -> None:
        """Gives back a probe that :meth:`admit` granted but that did not start."""
        with self._lock:
            trip = self._trips.get(host)
            if trip is not None:
                trip.probing = False

    def retry_in(self, host: str) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            trip = self._trips.get(host)
            if trip is None or trip.opened_at is None:
                return 0.0
            return max(0.0, trip.opened_at + trip.cooldown - self._clock())

    def refusal(self, host: str, url: str) -> FetchError:
        """The error for a request that an open breaker does not send."""
        with self._lock:
            trip = self._trips.get(host) or _Trip("host_unreachable", "host is down")
            self.refused += 1
        return FetchError(url, trip.reason,
                          f"not tried: {trip.message} (host {host} failed {trip.failures} "
                          f"time(s) in a row; its requests fail at once for "
                          f"{trip.cooldown:g} s before one is tried again)",
                          attempts=0, transient=True, failed_host=host)

    def record(self, host: str, reason: str | None, message: str = "") -> None:
        """The outcome of a request that went out: ``reason`` None for any HTTP answer."""
        with self._lock:
            trip = self._trips.get(host)
            if reason not in HOST_DOWN_REASONS:
                # The host answered (even a 404 or a 503 proves it is there), or failed
                # in a way that says nothing about the host as a whole (a read timeout).
                self._trips.pop(host, None)
                return
            if trip is None:
                trip = self._trips[host] = _Trip(reason, message)
            trip.reason, trip.message = reason, message
            trip.failures += 1
            if trip.probing or trip.opened_at is None and trip.failures >= self.failures:
                trip.cooldown = (self.cooldown if trip.opened_at is None
                                 else min(self.max_cooldown, trip.cooldown * 2))
                trip.opened_at = self._clock()
                trip.probing = False

    def state(self, host: str) -> str:
        """``closed``, ``open`` or ``half-open`` (cool-down over, or a probe out)."""
        with self._lock:
            trip = self._trips.get(host)
            if trip is None or trip.opened_at is None:
                return "closed"
            if trip.probing or self._clock() - trip.opened_at >= trip.cooldown:
                return "half-open"
            return "open"


class HostLimiter:
    """Counts requests in flight per host and spaces their starts. Thread-safe.

    ``try_acquire`` never blocks, so a scheduler can look at every host and start
    whichever is ready; ``peak`` records the most requests ever in flight per host.
    """

    def __init__(self, max_concurrent: int = 2, min_delay: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if min_delay < 0:
            raise ValueError("min_delay must not be negative")
        self.max_concurrent = max_concurrent
        self.min_delay = min_delay
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = collections.defaultdict(int)
        self._last_start: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self.peak: dict[str, int] = collections.defaultdict(int)

    def delay_for(self, host: str) -> float:
        """The spacing that applies to ``host`` (configured or robots.txt Crawl-delay)."""
        return self._delay.get(host, self.min_delay)

    def set_delay(self, host: str, delay: float) -> None:
        """Raises (never lowers below the default) the spacing for one host."""
        with self._lock:
            self._delay[host] = max(self.min_delay, delay)

    def try_acquire(self, host: str) -> float:
        """Takes a slot for ``host`` and returns 0, or returns how long to wait.

        ``math.inf`` means the host is full: wait for a release, not for the clock.
        """
        with self._lock:
            if self._in_flight[host] >= self.max_concurrent:
                return math.inf
            now = self._clock()
            last = self._last_start.get(host)
            if last is not None:
                wait = last + self.delay_for(host) - now
                if wait > 0:
                    return wait
            self._in_flight[host] += 1
            self._last_start[host] = now
            self.peak[host] = max(self.peak[host], self._in_flight[host])
            return 0.0

    def release(self, host: str) -> None:
        """Gives back a slot taken by :meth:`try_acquire`."""
        with self._lock:
            self._in_flight[host] -= 1
            if self._in_flight[host] <= 0:
                del self._in_flight[host]

    def in_flight(self, host: str) -> int:
        """Requests to ``host`` running now."""
        with self._lock:
            return self._in_flight.get(host, 0)


@dataclass
class _Task:
    host: str
    fn: Callable[..., Any]
    args: tuple
    future: Future
    label: str = ""
    refusal: BaseException | None = None
    """Set when an open breaker fails the task without running it (no slot taken)."""
    probe: bool = False


class HostScheduler:
    """A thread pool whose queue is split by host and gated by a :class:`HostLimiter`.

    Unlike a plain ``ThreadPoolExecutor``, a worker picks the next task of a host that
    has room (round robin over hosts), so tasks for a saturated host wait in their queue
    without holding a thread.
    """

    def __init__(self, limiter: HostLimiter, threads: int = 16, name: str = "fetch",
                 breaker: HostBreaker | None = None):
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.limiter = limiter
        self.breaker = breaker
        self._cond = threading.Condition()
        self._queues: collections.OrderedDict[str, collections.deque[_Task]] = (
            collections.OrderedDict())
        self._queued = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, host: str, fn: Callable[..., Any], *args: Any, label: str = "") -> Future:
        """Queues ``fn(*args)`` under ``host``; returns its future. ``label`` (the URL)
        names the task in the error of an open breaker."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler is shut down")
            self._queues.setdefault(host, collections.deque()).append(
                _Task(host, fn, args, future, label))
            self._queued += 1
            self._cond.notify()
        return future

    def pending(self) -> int:
        """Tasks queued and not yet started."""
        with self._cond:
            return self._queued

    def shutdown(self, wait: bool = True) -> None:
        """Cancels queued tasks, lets running ones finish, and stops the threads."""
        with self._cond:
            self._closed = True
            for queue in self._queues.values():
                for task in queue:
                    task.future.cancel()
            self._queues.clear()
            self._queued = 0
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()

    @property
    def is_shutdown(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._closed

    def _pop(self, host: str) -> _Task:
        queue = self._queues[host]
        task = queue.popleft()
        self._queued -= 1
        if queue:
            self._queues.move_to_end(host)  # round robin over hosts
        else:
            del self._queues[host]
        return task

    def _pick(self) -> tuple[_Task | None, float | None]:
        """The next runnable task (slot taken, or refused by the breaker), else how long
        until one may be."""
        soonest = math.inf
        for host in list(self._queues):
            verdict = self.breaker.admit(host) if self.breaker else HostBreaker.CLOSED
            if verdict == HostBreaker.OPEN:
                # A dead host's queue drains at once, without slots or spacing.
                task = self._pop(host)
                task.refusal = self.breaker.refusal(host, task.label)  # type: ignore[union-attr]
                return task, None
            if verdict == HostBreaker.WAIT:
                soonest = min(soonest, FULL_HOST_RECHECK)
                continue
            wait = self.limiter.try_acquire(host)
            if wait == 0:
                task = self._pop(host)
                task.probe = verdict == HostBreaker.PROBE
                return task, None
            if verdict == HostBreaker.PROBE:
                self.breaker.cancel_probe(host)  # type: ignore[union-attr]
            soonest = min(soonest, wait)
        # A full host may be released by another scheduler sharing the limiter, which does
        # not notify this one: look again shortly instead of sleeping until our own release.
        return None, (FULL_HOST_RECHECK if math.isinf(soonest) else soonest)

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    task, wait = self._pick()
                    if task is not None:
                        break
                    self._cond.wait(wait)
            if task.refusal is not None:
                if task.future.set_running_or_notify_cancel():
                    task.future.set_exception(task.refusal)
                continue
            try:
                if task.future.set_running_or_notify_cancel():
                    try:
                        task.future.set_result(task.fn(*task.args))
                    except BaseException as e:  # noqa: BLE001 - handed to the future's owner
                        task.future.set_exception(e)
                elif task.probe:
                    self.breaker.cancel_probe(task.host)  # type: ignore[union-attr]
            finally:
                with self._cond:
                    self.limiter.release(task.host)
                    self._cond.notify_all()


@dataclass(frozen=True)
class RobotsVerdict:
    """Whether a URL may be fetched, and the host's Crawl-delay if it names one."""

    allowed: bool
    crawl_delay: float | None = None
    reason: str = ""


class RobotsCache:
    """robots.txt per scheme+host+port, fetched once (per TTL) and shared by threads.

    Following RFC 9309: a 4xx answer (no robots.txt) allows everything; a 5xx, 429 or
    network failure after retries disallows everything for that host, since the site
    may be in trouble; other refusals of the robots.txt itself (too large, a redirect
    off to a blocked address) count as no rules. A host that cannot be reached at all
    (its name does not resolve, connections are refused) is not a verdict to remember
    for a day: that failure is raised as the request's own, uncached, and the circuit
    breaker decides when the host is tried again.
    """

    def __init__(self, client: HttpClient, token: str = PRODUCT_TOKEN,
                 ttl: float = ROBOTS_TTL, clock: Callable[[], float] = time.monotonic):
        self._client = client
        self._token = token
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Any]] = {}
        self._loading: dict[str, threading.Event] = {}
        self.fetches = 0

    def check(self, url: str) -> RobotsVerdict:
        """The verdict for ``url``; fetches the host's robots.txt on first use."""
        parts = urlsplit(url)
        key = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        rules = self._rules(key)
        if isinstance(rules, RobotsVerdict):
            return rules
        if rules is None:
            return RobotsVerdict(True)
        delay = rules.crawl_delay(self._token)
        if not rules.can_fetch(url, self._token):
            return RobotsVerdict(False, delay, "disallowed by robots.txt")
        return RobotsVerdict(True, delay)

    def _rules(self, key: str) -> Any:
        while True:
            with self._lock:
                cached = self._entries.get(key)
                if cached is not None and self._clock() - cached[0] < self._ttl:
                    return cached[1]
                event = self._loading.get(key)
                if event is None:
                    event = self._loading[key] = threading.Event()
                    break
            event.wait()  # another thread is fetching this host's robots.txt
        try:
            rules = self._load(key)
            with self._lock:
                self._entries[key] = (self._clock(), rules)
            return rules
        finally:
            with self._lock:
                del self._loading[key]
            event.set()

    def _load(self, key: str) -> Any:
        self.fetches += 1
        try:
            response = self._client.get(key + "/robots.txt", accept="text/plain, */*;q=0.5",
                                        max_bytes=ROBOTS_MAX_BYTES)
        except FetchError as e:
            if e.reason in HOST_DOWN_REASONS and e.failed_host == host_of(key):
                raise
            unreachable = e.transient or e.status == 429 or (e.status or 0) >= 500
            if unreachable:
                return RobotsVerdict(False, None, f"robots.txt unreachable ({e.reason})")
            return None
        try:
            return Protego.parse(response.body.decode("utf-8", "replace"))
        except Exception as e:  # noqa: BLE001 - a hostile robots.txt must not stop the run
            _LOG.info("ignoring unparseable robots.txt at %s: %s", key, e)
            return None


class PoliteFetcher:
    """HTTP client, per-host limiter, robots.txt cache and host-aware pool in one object.

    Open it in ``DoFn.setup()`` and close it in ``teardown()``; it is thread-safe.
    """

    def __init__(self, policy: FetchPolicy, threads: int = 16,
                 resolver: Callable[[str, int], list[str]] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, name: str = "fetch"):
        self.policy = policy
        self.client = HttpClient(policy, resolver=resolver, sleep=sleep)
        # Injected clocks (tests) get a private limiter and breaker; real runs share one
        # per worker process (``hosts`` keeps the process's HostState alive).
        self.hosts: HostState | None = host_state() if clock is time.monotonic else None
        if self.hosts is not None:
            self.limiter = self.hosts.limiter(policy.per_host_concurrency,
                                              policy.per_host_delay)
        else:
            self.limiter = HostLimiter(policy.per_host_concurrency, policy.per_host_delay,
                                       clock)
        self.breaker: HostBreaker | None = None
        if policy.breaker_failures > 0:
            limits = (policy.breaker_failures, policy.breaker_cooldown,
                      policy.breaker_max_cooldown)
            self.breaker = (self.hosts.breaker(*limits) if self.hosts is not None
                            else HostBreaker(*limits, clock))
        self.robots = RobotsCache(self.client, clock=clock)
        self.scheduler = HostScheduler(self.limiter, threads, name, self.breaker)

    def submit(self, url: str, **get_args: Any) -> Future:
        """Queues a GET; the future gives a :class:`Response` or raises FetchError."""
        return self.scheduler.submit(host_of(url), self._fetch, url, get_args, label=url)

    def fetch(self, url: str, **get_args: Any) -> Response:
        """Synchronous :meth:`submit`."""
        return self.submit(url, **get_args).result()

    def _fetch(self, url: str, get_args: dict[str, Any]) -> Response:
        host = host_of(url)
        outcome: str | None = None
        message = ""
        try:
            return self._fetch_politely(url, get_args)
        except FetchError as e:
            # A redirect to a dead host says nothing against the host that answered it.
            if e.failed_host in (None, host):
                outcome, message = e.reason, e.message
            raise
        finally:
            if self.breaker is not None:
                self.breaker.record(host, outcome, message)

    def _fetch_politely(self, url: str, get_args: dict[str, Any]) -> Response:
        if self.policy.respect_robots and is_http_url(url):
            try:
                verdict = self.robots.check(url)
            except FetchError as e:  # the host cannot be reached: the page's own failure
                raise FetchError(url, e.reason, f"{e.message} (fetching robots.txt)",
                                 e.status, e.attempts, e.transient, e.retry_after,
                                 e.failed_host) from e
            if verdict.crawl_delay:
                self.limiter.set_delay(host_of(url),
                                       min(verdict.crawl_delay, self.policy.max_crawl_delay))
            if not verdict.allowed:
                reason = ("robots_disallowed" if verdict.reason.startswith("disallowed")
                          else "robots_unreachable")
                raise FetchError(url, reason, f"{verdict.reason}; not fetched", attempts=0)
        return self.client.get(url, **get_args)

    def close(self) -> None:
        """Stops the pool (queued requests are cancelled) and closes connections."""
        self.scheduler.shutdown(wait=True)
        self.client.close()


class InFlight:
    """Futures a DoFn started, each with the window and timestamp of its input element.

    Results are handed back on the bundle's own thread (Beam metrics and outputs are
    not thread-safe), either as they complete (:meth:`ready`) or all at the end of the
    bundle (:meth:`drain`), where they must be emitted as ``WindowedValue``s.
    """

    def __init__(self, limit: int = MAX_QUEUED):
        self.limit = limit
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, future: Future, payload: Any, timestamp: Any, window: Any) -> None:
        """Tracks ``future``; ``payload`` comes back with its outcome."""
        self._count += 1
        future.add_done_callback(lambda f: self._done.put((f, payload, timestamp, window)))

    def ready(self) -> list[tuple[Future, Any, Any, Any]]:
        """Whatever has completed, waiting only while more than ``limit`` are in flight."""
        out = []
        while self._count > self.limit:
            out.append(self._done.get())
            self._count -= 1
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out
            self._count -= 1

    def drain(self) -> list[tuple[Future, Any, Any, Any]]:
        """Waits for everything still in flight."""
        out = []
        while self._count:
            out.append(self._done.get())
            self._count -= 1
        return out


def fetch_outcome(future: Future) -> tuple[Any, FetchError | None]:
    """``(response, None)`` or ``(None, FetchError)``; any other exception is a bug and
    is raised so the bundle fails loudly."""
    error = future.exception()
    if error is None:
        return future.result(), None
    if isinstance(error, FetchError):
        return None, error
    raise error


class PoliteFetchFn(beam.DoFn):
    """The skeleton every fetching DoFn shares (feeds and pages): a :class:`PoliteFetcher`
    opened in ``setup``, each element's GET queued with :meth:`fetch`, and outcomes handed
    to :meth:`handle` on the bundle's own thread, in ``process`` as they complete or in
    ``finish_bundle``. Subclasses define ``handle(payload, response, error, timestamp,
    window)``, which yields the outputs of one fetch as ``WindowedValue``s (they may be
    yielded from ``finish_bundle``, where Beam needs their window spelled out).
    """

    fetcher_name = "fetch"

    def __init__(self, policy: FetchPolicy, threads: int = 16, resolver=None):
        self._policy = policy
        self._threads = threads
        self._resolver = resolver
        self._fetcher: PoliteFetcher | None = None
        self._inflight: InFlight | None = None

    def setup(self) -> None:
        self._fetcher = PoliteFetcher(self._policy, self._threads, resolver=self._resolver,
                                      name=self.fetcher_name)

    def teardown(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()

    def start_bundle(self) -> None:
        self._inflight = InFlight(limit=MAX_QUEUED)

    def fetch(self, url: str, payload: Any, timestamp: Any, window: Any,
              **get_args: Any) -> Iterator[Any]:
        """Queues a GET of ``url``; yields the outputs of whatever fetches completed."""
        assert self._fetcher is not None and self._inflight is not None
        self._inflight.add(self._fetcher.submit(url, **get_args), payload, timestamp, window)
        yield from self.completed()

    def completed(self) -> Iterator[Any]:
        """Outputs of the fetches that completed (waiting only if too many are queued)."""
        assert self._inflight is not None
        for future, payload, timestamp, window in self._inflight.ready():
            response, error = fetch_outcome(future)
            yield from self.handle(  # type: ignore[attr-defined]
                payload, response, error, timestamp, window)

    def finish_bundle(self) -> Iterator[Any]:
        assert self._inflight is not None
        for future, payload, timestamp, window in self._inflight.drain():
            response, error = fetch_outcome(future)
            yield from self.handle(  # type: ignore[attr-defined]
                payload, response, error, timestamp, window)
