"""A careful HTTP client for feeds and article pages.

Built on ``urllib3`` so that every byte is under our control:

* redirects are followed by hand (at most ``max_redirects``), and every hop is checked;
* the host is resolved once, every resolved address is checked against the SSRF guard
  (loopback, private, link-local, multicast, reserved), and the connection goes to the
  checked address, so a DNS answer cannot change between check and use;
* bodies are read as a stream and cut at ``max_bytes``; compressed bodies are inflated
  with the same cap, which defuses decompression bombs;
* connect, read and total deadlines apply to each attempt;
* transient failures (connection errors, timeouts, 429, 5xx) are retried by ``tenacity``
  with exponential backoff and jitter, honouring ``Retry-After``; permanent ones are not.

Failures are raised as :class:`FetchError` carrying a short ``reason`` slug, the HTTP
status and the number of attempts, which the DoFns turn into error records.
"""

from __future__ import annotations

import dataclasses
import email.utils
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

from transforms.urls import ALLOWED_SCHEMES

DEFAULT_USER_AGENT = "newsbeam/0.1 (+https://github.com/newsbeam/newsbeam)"
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and manners for one client. Every field has a safe default."""

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

    def replace(self, **changes: object) -> FetchPolicy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Response:
    """A successful (2xx or 304) response with its body fully read and decompressed."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class FetchError(Exception):
    """A fetch that failed; ``reason`` is a short slug such as ``http_404`` or ``timeout``."""

    def __init__(self, url: str, reason: str, message: str, status: int | None = None,
                 attempts: int = 1, transient: bool = False, retry_after: float | None = None):
        super().__init__(f"{reason}: {message} ({url})")
        self.url = url
        self.reason = reason
        self.message = message
        self.status = status
        self.attempts = attempts
        self.transient = transient
        self.retry_after = retry_after


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
                 sleep: Callable[[float], None] = time.sleep):
        self.policy = policy or FetchPolicy()
        self._resolve = resolver or _resolve
        self._sleep = sleep
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    # -- public API -------------------------------------------------------------------

    def get(self, url: str, *, accept: str = "*/*",
            allowed_types: tuple[str, ...] | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
        """GETs ``url`` with retries; returns a 2xx/304 response or raises FetchError."""
        attempts = 0

        def one_attempt() -> Response:
            nonlocal attempts
            attempts += 1
            return self._get_once(url, accept, allowed_types, headers or {})

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = min(self.policy.backoff_max,
                          self.policy.backoff_initial * 2 ** (state.attempt_number - 1))
            backoff = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not crypto
            if isinstance(exc, FetchError) and exc.retry_after is not None:
                return max(backoff, exc.retry_after)
            return backoff

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.policy.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, FetchError) and e.transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response = retrying(one_attempt)
        except FetchError as e:
            e.attempts = attempts
            raise
        return dataclasses.replace(response, attempts=attempts)

    # -- one attempt ------------------------------------------------------------------

    def _get_once(self, url: str, accept: str, allowed_types: tuple[str, ...] | None,
                  extra_headers: Mapping[str, str]) -> Response:
        policy = self.policy
        deadline = time.monotonic() + policy.total_timeout
        current = url
        seen: set[str] = set()
        for _hop in range(policy.max_redirects + 1):
            if current in seen:
                raise FetchError(url, "redirect_loop", f"redirect loop at {current}")
            seen.add(current)
            resp = self._request(current, accept, extra_headers, deadline)
            if resp.status in REDIRECT_STATUSES:
                location = resp.headers.get("location")
                resp.release_conn()
                if not location:
                    raise FetchError(url, "bad_redirect", "redirect without Location",
                                     status=resp.status)
                current = urljoin(current, location.strip())
                continue
            try:
                return self._finish(url, current, resp, allowed_types, deadline)
            finally:
                resp.release_conn()
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

    def _request(self, url: str, accept: str, extra_headers: Mapping[str, str],
                 deadline: float) -> urllib3.BaseHTTPResponse:
        policy = self.policy
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES or not parts.hostname:
            raise FetchError(url, "unsupported_scheme", f"refusing scheme {scheme!r}")
        host = parts.hostname.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            addresses = self._resolve(host, port)
        except OSError as e:
            raise FetchError(url, "dns_error", str(e), transient=True) from e
        if not addresses:
            raise FetchError(url, "dns_error", f"{host} did not resolve", transient=True)
        if not policy.allow_private_network:
            blocked = [a for a in addresses if not address_is_public(a)]
            if blocked:
                raise FetchError(url, "blocked_address",
                                 f"{host} resolves to non-public address {blocked[0]}; "
                                 "pass --allow-private-network to permit it")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        headers = {
            "Host": host_header,
            "User-Agent": policy.user_agent,
            "Accept": accept,
            "Accept-Encoding": "gzip, deflate",
            **extra_headers,
        }
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(url, "timeout", "total deadline exceeded", transient=True)
        timeout = urllib3.Timeout(connect=min(policy.connect_timeout, remaining),
                                  read=min(policy.read_timeout, remaining))
        pool = self._pool(scheme, addresses[0], port, host)
        try:
            resp = pool.urlopen("GET", path, headers=headers, redirect=False, retries=False,
                                preload_content=False, decode_content=False, timeout=timeout,
                                assert_same_host=False)
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
                allowed_types: tuple[str, ...] | None, deadline: float) -> Response:
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
        if allowed_types is not None and content_type and not any(
                content_type == t or (t.endswith("/") and content_type.startswith(t))
                for t in allowed_types):
            raise FetchError(url, "bad_content_type", f"content type {content_type!r} refused",
                             status=status)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise FetchError(url, "too_large", f"Content-Length {declared} exceeds "
                             f"{self.policy.max_bytes} bytes", status=status)
        body = self._read_body(url, resp, headers, deadline)
        return Response(final_url, status, headers, body)

    def _read_body(self, url: str, resp: urllib3.BaseHTTPResponse, headers: Mapping[str, str],
                   deadline: float) -> bytes:
        limit = self.policy.max_bytes
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
                if time.monotonic() > deadline:
                    raise FetchError(url, "timeout", "total deadline exceeded while reading",
                                     status=resp.status, transient=True)
                chunk = resp.read(64 * 1024)
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
        except urllib3.exceptions.ProtocolError as e:
            raise FetchError(url, "connection_error", f"connection broken mid-body: {e}",
                             status=resp.status, transient=True) from e
        return b"".join(chunks)


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


def decode_html(body: bytes, headers: Mapping[str, str]) -> str:
    """Decodes an HTML body: charset from headers, then ``<meta>``, then detection."""
    candidates = []
    ct = headers.get("content-type", "")
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", ct, re.I)
    if m:
        candidates.append(m.group(1))
    m2 = _META_CHARSET.search(body[:4096])
    if m2:
        candidates.append(m2.group(1).decode("ascii", "ignore"))
    for name in candidates:
        try:
            return body.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    return str(best) if best is not None else body.decode("utf-8", "replace")
