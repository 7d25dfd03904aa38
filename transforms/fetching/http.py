"""A careful HTTP client for feeds and article pages.

Size: about 670 lines, kept in one module on purpose: the request loop, its limits
(redirects, bytes, deadlines, the address guard, the proxy tunnel) and the mapping of every
failure to one error reason form a single contract that ``tests/test_fetch_faults.py`` and
the hostile-input tests check as a whole; splitting the loop would spread that contract over
modules that cannot be read apart. Charset decoding (``decode_html``) is the one part with no
tie to the loop and the first to move out if the module grows.

Built on ``urllib3`` so that every byte is under our control:

* redirects are followed by hand (at most ``max_redirects``), and every hop is checked;
* the host is resolved once, every resolved address is checked against the SSRF guard
  (loopback, private, link-local, multicast, reserved), and the connection goes to the
  checked address, so a DNS answer cannot change between check and use;
* with a proxy set (:mod:`transforms.fetching.proxy`), the request goes through it, but
  the target is resolved and checked here first, just the same;
* bodies are read as a stream and cut at ``max_bytes``; compressed bodies are inflated
  with the same cap, which defuses decompression bombs;
* connect, read and total deadlines apply to each attempt;
* transient failures (connection errors, timeouts, 429, 5xx) are retried by ``tenacity``
  with exponential backoff and jitter, honouring ``Retry-After`` up to a cap; permanent
  ones (404, 410, refusals, a name that does not exist) are not;
* a failed connect says why: ``dns_error``, ``connection_refused``, ``host_unreachable``
  (urllib3 reports a refusal as a connect timeout otherwise);
* a body is read with ``read1`` so that a server trickling one byte at a time still meets
  the total deadline (a plain ``read(n)`` would wait for all ``n`` bytes).

Per-host manners (concurrency, delay, robots.txt) live in :mod:`transforms.fetching.politeness`;
this module knows one request at a time.

Failures are raised as :class:`FetchError` carrying a short ``reason`` slug, the HTTP
status and the number of attempts, which the DoFns turn into error records.
"""

from __future__ import annotations

import dataclasses
import email.utils
import errno
import ipaddress
import random
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import tenacity
import urllib3

from transforms.fetching.proxy import ProxyPools, redact
from transforms.fetching.urls import ALLOWED_SCHEMES

PRODUCT_TOKEN = "newsbeam"
"""The name robots.txt rules are matched against."""
DEFAULT_CONTACT_URL = "https://github.com/newsbeam/newsbeam"
DEFAULT_USER_AGENT = f"{PRODUCT_TOKEN}/0.1 (+{DEFAULT_CONTACT_URL})"
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and manners for one client. Every field has a safe default.

    ``per_host_delay`` is the least time between the starts of two requests to one host
    (raised to the host's robots.txt ``Crawl-delay``, at most ``max_crawl_delay``);
    ``per_host_concurrency`` caps requests in flight to one host. Both, and the circuit
    breaker (``breaker_*``), are enforced by :class:`transforms.fetching.politeness.PoliteFetcher`,
    shared by the fetchers of one worker process.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    max_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    user_agent: str = DEFAULT_USER_AGENT
    allow_private_network: bool = False
    per_host_concurrency: int = 2
    per_host_delay: float = 1.0
    max_crawl_delay: float = 30.0
    respect_robots: bool = True
    breaker_failures: int = 1
    """Requests in a row failing with a host-level reason (``HOST_DOWN_REASONS``: the name
    does not resolve, the connection is refused or unreachable), each after its own
    retries, that open a host's circuit breaker; 0 turns the breaker off."""
    breaker_cooldown: float = 60.0
    """Seconds an open breaker fails a host's requests at once before one probe request is
    let through; doubles after every failed probe, up to ``breaker_max_cooldown``."""
    breaker_max_cooldown: float = 900.0
    host_overrides: tuple[tuple[str, str], ...] = ()
    """``(hostname, address)`` pairs pinned by the operator, like curl's ``--resolve``:
    these names skip DNS and the private-network check (every other name and every
    redirect hop is still checked), and are reached directly, never through a proxy.
    Meant for tests and for in-house mirrors."""
    proxies: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    """``(scheme, proxy URL)`` pairs: requests for that scheme go through the proxy
    (see :mod:`transforms.fetching.proxy`); the private-network check still applies to
    the target."""
    no_proxy: str = ""
    """Hosts reached directly although a proxy is set (``NO_PROXY`` syntax)."""

    def replace(self, **changes: object) -> FetchPolicy:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def user_agent_for(contact_url: str) -> str:
    """The User-Agent naming the project and where its operator can be reached."""
    return f"{PRODUCT_TOKEN}/0.1 (+{contact_url})"


@dataclass(frozen=True)
class Response:
    """A successful (2xx or 304) response with its body fully read and decompressed."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1
    elapsed: float = 0.0
    """Seconds from the first attempt to the end of the body, retries included."""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class FetchError(Exception):
    """A fetch that failed; ``reason`` is a short slug such as ``http_404`` or ``timeout``."""

    def __init__(self, url: str, reason: str, message: str, status: int | None = None,
                 attempts: int = 1, transient: bool = False, retry_after: float | None = None,
                 failed_host: str | None = None):
        super().__init__(f"{reason}: {message} ({url})")
        self.url = url
        self.reason = reason
        self.message = message
        self.status = status
        self.attempts = attempts
        self.transient = transient
        self.retry_after = retry_after
        self.failed_host = failed_host
        """``host[:port]`` that could not be resolved or reached (for ``HOST_DOWN_REASONS``;
        a redirect hop's host when the hop failed, not the URL's)."""


def address_is_public(address: str) -> bool:
    """True if an IP address may be fetched without ``allow_private_network``."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Inflater:
    """Incremental gzip/deflate decoder that refuses to produce more than ``limit`` bytes."""

    def __init__(self, encoding: str, limit: int):
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
                 "deflate": zlib.MAX_WBITS}[encoding]
        self._d = zlib.decompressobj(wbits)
        self._limit = limit
        self._out = 0

    def feed(self, chunk: bytes) -> bytes:
        room = self._limit - self._out + 1
        data = self._d.decompress(chunk, room)
        self._out += len(data)
        if self._out > self._limit or self._d.unconsumed_tail:
            raise OverflowError
        return data

    def finish(self) -> bytes:
        data = self._d.flush()
        self._out += len(data)
        if self._out > self._limit:
            raise OverflowError
        if not self._d.eof:
            raise EOFError
        return data


class HttpClient:
    """Fetches URLs under a :class:`FetchPolicy`. Thread-safe; open one per DoFn instance."""

    def __init__(self, policy: FetchPolicy | None = None,
                 resolver: Callable[[str, int], list[str]] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.policy = policy or FetchPolicy()
        self._clock = clock  # what the total deadline of an attempt is measured by
        self._resolve = resolver or _resolve
        self._pinned = {h.lower(): a for h, a in self.policy.host_overrides}
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self._proxies = ProxyPools(self.policy.proxies, self.policy.no_proxy)

    def close(self) -> None:
        """Closes every pooled connection; the client may be used again afterwards."""
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
        self._proxies.close()

    # -- public API -------------------------------------------------------------------

    def get(self, url: str, *, accept: str = "*/*",
            allowed_types: tuple[str, ...] | None = None,
            refused_types: tuple[str, ...] = (),
            headers: Mapping[str, str] | None = None,
            max_bytes: int | None = None,
            sniff_binary: bool = False,
            origin_headers: Mapping[str, str] | None = None) -> Response:
        """GETs ``url`` with retries; returns a 2xx/304 response or raises FetchError.

        ``allowed_types`` (exact types, or prefixes ending in ``/``) is an allow-list of
        Content-Types, ``refused_types`` a deny-list; ``sniff_binary`` also refuses a
        body that looks binary whatever its declared type. ``max_bytes`` lowers the
        policy's size cap for this request. ``origin_headers`` (credentials, cookies) are
        sent only to the origin of ``url``: a redirect hop to another scheme, host or port
        goes without them.
        """
        attempts = 0
        started = self._clock()
        limits = _Limits(allowed_types, refused_types, headers or {},
                         min(max_bytes or self.policy.max_bytes, self.policy.max_bytes),
                         sniff_binary, origin_headers or {})

        def one_attempt() -> Response:
            nonlocal attempts
            attempts += 1
            return self._get_once(url, accept, limits)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.max_attempts),
            wait=self.retry_wait,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, FetchError) and e.transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response = retrying(one_attempt)
        except FetchError as e:
            e.attempts = attempts
            raise
        return dataclasses.replace(response, attempts=attempts,
                                   elapsed=self._clock() - started)

    def retry_wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt: jittered exponential backoff, or Retry-After.

        Full jitter between half and all of the exponential step keeps many workers
        that failed together from retrying together. A server's ``Retry-After`` wins
        when longer; ones above ``max_retry_after`` were already made permanent.
        """
        exc = state.outcome.exception() if state.outcome else None
        backoff = min(self.policy.backoff_max,
                      self.policy.backoff_initial * 2 ** (state.attempt_number - 1))
        backoff = self._rng.uniform(backoff / 2, backoff)
        if isinstance(exc, FetchError) and exc.retry_after is not None:
            return max(backoff, min(exc.retry_after, self.policy.max_retry_after))
        return backoff

    # -- one attempt ------------------------------------------------------------------

    def _get_once(self, url: str, accept: str, limits: _Limits) -> Response:
        policy = self.policy
        deadline = self._clock() + policy.total_timeout
        current = url
        seen: set[str] = set()
        for _hop in range(policy.max_redirects + 1):
            if current in seen:
                raise FetchError(url, "redirect_loop", f"redirect loop at {current}")
            seen.add(current)
            headers = limits.headers
            if limits.origin_headers and url_origin(current) == url_origin(url):
                headers = {**headers, **limits.origin_headers}
            resp = self._request(url, current, accept, headers, deadline)
            if resp.status in REDIRECT_STATUSES:
                location = resp.headers.get("location")
                _discard(resp)
                if not location:
                    raise FetchError(url, "bad_redirect", "redirect without Location",
                                     status=resp.status)
                current = urljoin(current, location.strip())
                continue
            try:
                response = self._finish(url, current, resp, limits, deadline)
            except BaseException:
                _discard(resp)
                raise
            resp.release_conn()
            return response
        raise FetchError(url, "too_many_redirects",
                         f"more than {policy.max_redirects} redirects")

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        address, port, maxsize=8, block=False, server_hostname=host,
                        assert_hostname=host)
                else:
                    pool = urllib3.HTTPConnectionPool(address, port, maxsize=8, block=False)
                self._pools[key] = pool
            return pool

    def _request(self, url: str, current: str, accept: str, extra_headers: Mapping[str, str],
                 deadline: float) -> urllib3.BaseHTTPResponse:
        """Sends one request for ``current`` (the original ``url`` or a redirect hop)."""
        policy = self.policy
        try:
            parts = urlsplit(current)
            scheme = parts.scheme.lower()
            hostname = parts.hostname
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as e:
            raise FetchError(url, "bad_url", f"unparseable URL {current[:200]!r}: {e}") from e
        if scheme not in ALLOWED_SCHEMES or not hostname:
            raise FetchError(url, "unsupported_scheme",
                             f"refusing {current[:200]!r}: only http(s) URLs with a host")
        host = hostname.lower()
        host_port = host if parts.port is None else f"{host}:{parts.port}"
        pinned = self._pinned.get(host)
        if pinned is not None:
            addresses = [pinned]
        else:
            try:
                addresses = self._resolve(host, port)
            except (OSError, UnicodeError) as e:
                raise dns_failure(url, host, e, host_port) from e
            if not addresses:
                raise FetchError(url, "dns_error", f"{host} did not resolve",
                                 failed_host=host_port)
            if not policy.allow_private_network:
                blocked = [a for a in addresses if not address_is_public(a)]
                if blocked:
                    raise FetchError(url, "blocked_address",
                                     f"{current[:200]} resolves to non-public address "
                                     f"{blocked[0]}; pass --allow-private-network to permit it")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {
            "Host": host_port,
            "User-Agent": policy.user_agent,
            "Accept": accept,
            "Accept-Encoding": "gzip, deflate",
            **extra_headers,
        }
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise FetchError(url, "timeout", "total deadline exceeded", transient=True)
        timeout = urllib3.Timeout(connect=min(policy.connect_timeout, remaining),
                                  read=min(policy.read_timeout, remaining))
        proxy = None if pinned is not None else self._proxies.for_target(scheme, host)
        try:
            if proxy is not None:
                # The target was checked above; the proxy connects to it by name.
                resp = proxy.urlopen("GET", f"{scheme}://{host_port}{path}", headers=headers,
                                     redirect=False, retries=False, preload_content=False,
                                     decode_content=False, timeout=timeout)
            else:
                pool = self._pool(scheme, addresses[0], port, host)
                resp = pool.urlopen("GET", path, headers=headers, redirect=False,
                                    retries=False, preload_content=False,
                                    decode_content=False, timeout=timeout,
                                    assert_same_host=False)
        except urllib3.exceptions.ProxyError as e:
            # The message names the proxy by host and port only: its URL may hold a password.
            cause = e.__cause__ or (e.args[1] if len(e.args) > 1 else None)
            raise FetchError(url, "proxy_error",
                             f"proxy {redact(proxy.proxy.url if proxy else '')} failed for "
                             f"{current[:200]}: {str(cause or e)[:300]}",
                             transient=True) from e
        except urllib3.exceptions.NewConnectionError as e:
            # urllib3 files refusals under ConnectTimeoutError: tell them apart first.
            raise connection_failure(url, e, host_port) from e
        except urllib3.exceptions.ConnectTimeoutError as e:
            raise FetchError(url, "timeout", f"connect timeout: {e}", transient=True) from e
        except urllib3.exceptions.ReadTimeoutError as e:
            raise FetchError(url, "timeout", f"read timeout: {e}", transient=True) from e
        except urllib3.exceptions.SSLError as e:
            raise FetchError(url, "tls_error", str(e)) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise FetchError(url, "connection_error", str(e), transient=True) from e
        return resp

    def _finish(self, url: str, final_url: str, resp: urllib3.BaseHTTPResponse,
                limits: _Limits, deadline: float) -> Response:
        headers = {k.lower(): v for k, v in resp.headers.items()}
        status = resp.status
        if status == 304:
            return Response(final_url, status, headers, b"")
        if status >= 400 or status < 200:
            retry_after = parse_retry_after(headers.get("retry-after"))
            transient = status in TRANSIENT_STATUSES
            if retry_after is not None and retry_after > self.policy.max_retry_after:
                transient = False
            raise FetchError(url, f"http_{status}", f"HTTP {status} from {final_url}",
                             status=status, transient=transient, retry_after=retry_after)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        refused = (limits.allowed_types is not None and content_type
                   and not _type_matches(content_type, limits.allowed_types)) or (
                       content_type and _type_matches(content_type, limits.refused_types))
        if refused:
            raise FetchError(url, "bad_content_type", f"content type {content_type!r} refused",
                             status=status)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise FetchError(url, "too_large", f"Content-Length {declared} exceeds "
                             f"{limits.max_bytes} bytes", status=status)
        body = self._read_body(url, resp, headers, deadline, limits.max_bytes)
        if limits.sniff_binary and looks_binary(body):
            raise FetchError(url, "binary_content",
                             f"body looks binary although typed {content_type or 'nothing'!r}",
                             status=status)
        return Response(final_url, status, headers, body)

    def _read_body(self, url: str, resp: urllib3.BaseHTTPResponse, headers: Mapping[str, str],
                   deadline: float, limit: int) -> bytes:
        encoding = headers.get("content-encoding", "identity").strip().lower()
        inflater = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            inflater = _Inflater(encoding, limit)
        elif encoding not in ("", "identity"):
            raise FetchError(url, "bad_encoding", f"unsupported Content-Encoding {encoding!r}",
                             status=resp.status)
        chunks: list[bytes] = []
        raw_total = 0
        out_total = 0
        try:
            while True:
                if self._clock() > deadline:
                    raise FetchError(url, "timeout", "total deadline exceeded while reading",
                                     status=resp.status, transient=True)
                chunk = resp.read1(64 * 1024)
                if not chunk:
                    break
                raw_total += len(chunk)
                if raw_total > limit:
                    raise FetchError(url, "too_large", f"body exceeds {limit} bytes",
                                     status=resp.status)
                data = inflater.feed(chunk) if inflater else chunk
                out_total += len(data)
                chunks.append(data)
            if inflater:
                chunks.append(inflater.finish())
        except OverflowError as e:
            raise FetchError(url, "decompression_bomb",
                             f"decompressed body exceeds {limit} bytes", status=resp.status) from e
        except (EOFError, zlib.error) as e:
            raise FetchError(url, "bad_compression", f"truncated or corrupt {encoding} body",
                             status=resp.status) from e
        except urllib3.exceptions.ReadTimeoutError as e:
            raise FetchError(url, "timeout", "read timeout in body", status=resp.status,
                             transient=True) from e
        except (urllib3.exceptions.ProtocolError, OSError) as e:
            raise FetchError(url, "connection_error", f"connection broken mid-body: {e}",
                             status=resp.status, transient=True) from e
        return b"".join(chunks)


PERMANENT_DNS_ERRORS = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None),
                      getattr(socket, "EAI_FAIL", None)) if code is not None)
"""``getaddrinfo`` answers that will not change on a retry seconds later: the name does
not exist (NXDOMAIN), has no address, or the resolver refused it for good. A timed-out
or temporary failure (``EAI_AGAIN``) is retried."""
HOST_DOWN_REASONS = frozenset({"dns_error", "connection_refused", "host_unreachable"})
"""Failures that say the host itself cannot be reached, whatever the URL: what trips the
per-host circuit breaker of :mod:`transforms.fetching.politeness`."""


def dns_failure(url: str, host: str, error: BaseException,
                failed_host: str | None = None) -> FetchError:
    """A ``dns_error``: permanent for NXDOMAIN-like answers and bad names, else transient."""
    failed_host = failed_host or host
    if isinstance(error, UnicodeError):
        return FetchError(url, "dns_error", f"{host}: not a valid host name ({error})",
                          failed_host=failed_host)
    if isinstance(error, socket.gaierror) and error.errno in PERMANENT_DNS_ERRORS:
        return FetchError(url, "dns_error", f"{host} does not resolve: {error.strerror}",
                          failed_host=failed_host)
    return FetchError(url, "dns_error", f"{host}: {error}", transient=True,
                      failed_host=failed_host)


def connection_failure(url: str, error: BaseException,
                       failed_host: str | None = None) -> FetchError:
    """A failed connect: ``connection_refused``, ``host_unreachable`` or ``connection_error``.

    All are transient for one request (a server restarting refuses for a moment); the
    per-host breaker is what stops a dead host from costing every queued URL its retries.
    """
    cause = error.__cause__ or error.__context__
    reason = "connection_error"
    if isinstance(cause, ConnectionRefusedError):
        reason = "connection_refused"
    elif isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        reason = "host_unreachable"
    return FetchError(url, reason, str(error), transient=True, failed_host=failed_host)


@dataclass(frozen=True)
class _Limits:
    """Per-request limits and headers, fixed for every attempt of one ``get``."""

    allowed_types: tuple[str, ...] | None
    refused_types: tuple[str, ...]
    headers: Mapping[str, str]
    max_bytes: int
    sniff_binary: bool
    origin_headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Sent only while the request stays on the origin of the URL asked for."""


def url_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the default port made explicit."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or (
            443 if scheme == "https" else 80)
    except ValueError:
        return "", url, None


def _type_matches(content_type: str, patterns: tuple[str, ...]) -> bool:
    return any(content_type == t or (t.endswith("/") and content_type.startswith(t))
               for t in patterns)


def _discard(resp: urllib3.BaseHTTPResponse) -> None:
    """Drops a response whose body will not be read, closing its connection.

    Draining the body to reuse the connection would let a trickling server hold the
    thread past every deadline, so the connection is closed instead.
    """
    try:
        resp.close()
    finally:
        resp.release_conn()


_BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF", b"PK\x03\x04", b"\x1f\x8b",
                 b"RIFF", b"OggS", b"\x00\x00\x00", b"BZh", b"7z\xbc\xaf", b"\x7fELF")


def looks_binary(body: bytes) -> bool:
    """True for bodies that are surely not text: known magic numbers or NUL bytes.

    UTF-16 and UTF-32 text carries NULs too, so a byte-order mark makes a body text.
    """
    head = body[:1024]
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return False
    return head.startswith(_BINARY_MAGIC) or b"\x00" in head


def _resolve(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
MESS_THRESHOLD = 0.2
"""Above this charset_normalizer mess ratio a decoding is taken to be mojibake."""


def _mess(text: str) -> float:
    """How garbled ``text`` looks (0 = clean), judged on a sample from its first non-ASCII
    character: markup before that tells nothing, and scoring a whole page is slow."""
    from charset_normalizer.md import mess_ratio

    start = next((i for i, ch in enumerate(text) if ord(ch) > 127), None)
    if start is None:
        return 0.0
    return float(mess_ratio(text[start:start + 8000]))


def declared_charsets(body: bytes, headers: Mapping[str, str]) -> list[str]:
    """Charsets named by the Content-Type header, then by a ``<meta>`` tag, in order."""
    names = []
    m = _HEADER_CHARSET.search(headers.get("content-type", ""))
    if m:
        names.append(m.group(1))
    m2 = _META_CHARSET.search(body[:8192])
    if m2:
        names.append(m2.group(1).decode("ascii", "ignore"))
    return names


def decode_html(body: bytes, headers: Mapping[str, str]) -> str:
    """Decodes an HTML body, distrusting declarations that produce mojibake.

    Order: a byte-order mark; then valid UTF-8 (non-ASCII bytes that happen to form
    valid UTF-8 are almost never another charset, and servers often claim ISO-8859-1
    for UTF-8 pages); then the header or ``<meta>`` charset if the text it gives does
    not look garbled; then ``charset_normalizer``'s detection (e.g. windows-1251 served
    as ISO-8859-1); as a last resort the least garbled candidate, with replacement.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body.decode(name, "replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    fallbacks: list[tuple[float, str]] = []
    for name in declared_charsets(body, headers):
        try:
            text = body.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
        mess = _mess(text)
        if mess <= MESS_THRESHOLD:
            return text
        fallbacks.append((mess, text))
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    if best is not None:
        text = str(best)
        fallbacks.append((_mess(text), text))
    if fallbacks:
        return min(fallbacks, key=lambda f: f[0])[1]
    return body.decode("utf-8", "replace")
