"""A fault-injection web server on 127.0.0.1 for the fetch tests and the fetch benchmark.

One threaded server plays any number of virtual hosts (told apart by the Host header,
reached through ``FetchPolicy.host_overrides``) and serves, besides pages a test adds:

========================  ==============================================================
path                      behaviour
========================  ==============================================================
/robots.txt               ``Disallow: /private/``
/status/CODE              that status, every time
/flaky/N/KEY              500 for the first N requests of KEY, then an article
/retry-after/S/KEY        429 with ``Retry-After: S`` the first time, then an article
/always-429/S             429 with ``Retry-After: S``, every time
/stall                    headers and 10 bytes, then silence (until ``stall_seconds``)
/trickle                  one byte every 0.2 s (at most 400 bytes)
/reset                    a partial body, then a TCP reset
/truncated-gzip           gzip cut in the middle (Content-Length matches the cut)
/gzip-ok                  a well-formed gzip article
/gzip-bomb                50 MB of zeros as ~50 KB of gzip
/huge                     50 MB of HTML, no Content-Length, closed at the end
/huge-declared            Content-Length of 50 MB
/binary                   a PNG typed image/png
/binary-as-html           a PNG typed text/html
/loop/a, /loop/b          redirect to each other
/chain/N                  redirect to /chain/N+1 (404 past 100)
/redirect/NAME            302 to ``redirects[NAME]`` (set by the test)
/article/NAME             an English article (any NAME)
========================  ==============================================================

Every loop is bounded, and ``close()`` (called by the fixtures) wakes stalled handlers
and stops the server. ``latency`` delays every response; ``peak`` records the most
requests ever in flight per Host header.
"""

from __future__ import annotations

import collections
import gzip
import random
import select
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOMB_BYTES = 50 * 1024 * 1024
HUGE_BYTES = 50 * 1024 * 1024
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89" + b"\x00" * 200)
ROBOTS = b"User-agent: *\nDisallow: /private/\n"

_bomb_cache: list[bytes] = []


def gzip_bomb() -> bytes:
    """50 MB of zeros, gzip-compressed (about 50 KB); built once per process."""
    if not _bomb_cache:
        c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b"\0" * (1024 * 1024)
        parts = [c.compress(block) for _ in range(BOMB_BYTES // len(block))]
        parts.append(c.flush())
        _bomb_cache.append(b"".join(parts))
    return _bomb_cache[0]


_WORDS = (
    "harbour", "council", "ferry", "island", "winter", "budget", "repair", "pier", "storm",
    "fishing", "boat", "engineer", "school", "teacher", "market", "grain", "price", "farmer",
    "railway", "station", "bridge", "river", "flood", "rescue", "hospital", "nurse", "doctor",
    "clinic", "library", "reader", "museum", "painting", "concert", "orchestra", "choir",
    "football", "match", "goal", "referee", "stadium", "season", "coach", "league", "village",
    "mayor", "election", "vote", "minister", "parliament", "treaty", "border", "customs",
    "shipment", "cargo", "port", "crane", "warehouse", "worker", "union", "strike", "wage",
    "factory", "steel", "bakery", "bread", "festival", "parade", "weather", "forecast", "frost",
    "harvest", "orchard", "apple", "cider", "mountain", "trail", "hiker", "tunnel", "highway",
    "traffic", "cyclist", "tram", "airport", "runway", "pilot", "lighthouse", "keeper", "coast",
    "beach", "tourist", "hotel", "restaurant", "chef", "menu",
)


def article_page(title: str, paragraphs: list[str] | None = None,
                 meta_charset: str | None = None) -> str:
    """A plausible news page around an <article>; without ``paragraphs``, three of
    pseudo-random words seeded by the title, so that no two pages look like duplicates."""
    if paragraphs is None:
        rng = random.Random(title)
        paragraphs = [" ".join(rng.choice(_WORDS) for _ in range(45)).capitalize() + "."
                      for _ in range(3)]
    meta = f'<meta charset="{meta_charset}">' if meta_charset else ""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!doctype html><html><head>{meta}<title>{title}</title></head><body>"
            f"<nav><a href='/'>Home</a></nav><article><h1>{title}</h1>{body}</article>"
            f"<footer>Contact the newsroom.</footer></body></html>")


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the client closed (or reset) ``conn``: readable with nothing to read."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class FaultServer:
    """The server; use as a context manager or call :meth:`close`."""

    def __init__(self, latency: float = 0.0, stall_seconds: float = 20.0):
        self.latency = latency
        self.stall_seconds = stall_seconds
        self.pages: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.redirects: dict[str, str] = {}
        self.hits: collections.Counter = collections.Counter()
        self.in_flight: collections.Counter = collections.Counter()
        self.peak: collections.Counter = collections.Counter()
        self.open: collections.defaultdict = collections.defaultdict(set)
        self.requests = 0
        self.user_agents: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                host = self.headers.get("Host", "")
                with server._lock:
                    server.requests += 1
                    server.user_agents.add(self.headers.get("User-Agent", ""))
                    server.hits[(host, self.path)] += 1
                    server.in_flight[host] += 1
                    self.answered = False
                    server.open[host].add(self)
                    # A handler still writing to a client that already gave up (a body
                    # cut at the size limit, a stalled response past the deadline) is not
                    # a request in flight: count only connections the client keeps open.
                    # Nor is one whose whole response is written but whose thread has not
                    # yet returned: the client may already have started its next request.
                    live = sum(1 for other in server.open[host]
                               if not other.answered and not _peer_closed(other.connection))
                    server.peak[host] = max(server.peak[host], live)
                try:
                    if server.latency:
                        server._stop.wait(server.latency)
                    server._route(self, host)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    self.close_connection = True
                finally:
                    with server._lock:
                        server.in_flight[host] -= 1
                        server.open[host].discard(self)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # the default backlog of 5 drops bursts of connects

            def handle_error(self, request, client_address) -> None:
                pass  # faults are the point; their tracebacks are noise

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, host: str, path: str) -> str:
        """``http://host:port/path`` for a virtual host of this server."""
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, body: str | bytes, content_type: str = "text/html; charset=utf-8",
            status: int = 200, headers: dict[str, str] | None = None) -> None:
        """Serves ``body`` at ``path`` on every virtual host."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        hdrs = {"Content-Type": content_type} if content_type else {}
        hdrs.update(headers or {})
        self.pages[path] = (status, hdrs, data)

    def close(self) -> None:
        """Wakes stalled handlers, stops serving and joins the server thread."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    # -- routing -------------------------------------------------------------------------

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "text/html; charset=utf-8")
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()
        h.answered = True  # the client has all of it: no longer in flight for ``peak``

    def _hit_count(self, host: str, path: str) -> int:
        with self._lock:
            return self.hits[(host, path)]

    def _route(self, h: BaseHTTPRequestHandler, host: str) -> None:
        path = h.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        head = parts[0]
        article = article_page(f"Article {path}").encode("utf-8")
        if path in self.pages:
            status, headers, body = self.pages[path]
            self._send(h, status, body, headers)
        elif path == "/robots.txt":
            self._send(h, 200, ROBOTS, {"Content-Type": "text/plain"})
        elif head == "status" and len(parts) == 2 and parts[1].isdigit():
            self._send(h, int(parts[1]), b"status page")
        elif head == "flaky" and len(parts) == 3:
            if self._hit_count(host, h.path) <= int(parts[1]):
                self._send(h, 500, b"try again")
            else:
                self._send(h, 200, article)
        elif head == "retry-after" and len(parts) == 3:
            if self._hit_count(host, h.path) == 1:
                self._send(h, 429, b"slow down", {"Retry-After": parts[1]})
            else:
                self._send(h, 200, article)
        elif head == "always-429" and len(parts) == 2:
            self._send(h, 429, b"slow down", {"Retry-After": parts[1]})
        elif path == "/stall":
            self._headers(h, 200, {"Content-Length": "1000"})
            h.wfile.write(b"<html><bod")
            h.wfile.flush()
            self._linger(h, self.stall_seconds)
            h.close_connection = True
        elif path == "/trickle":
            self._headers(h, 200, {"Content-Length": "400"})
            for _ in range(400):
                if not self._linger(h, 0.2):
                    break
                h.wfile.write(b"x")
                h.wfile.flush()
        elif path == "/reset":
            self._headers(h, 200, {"Content-Length": "100000"})
            h.wfile.write(article[:500])
            h.wfile.flush()
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
        elif path == "/truncated-gzip":
            data = gzip.compress(article * 20)
            self._send(h, 200, data[: len(data) // 2], {"Content-Encoding": "gzip"})
        elif path == "/gzip-ok":
            self._send(h, 200, gzip.compress(article), {"Content-Encoding": "gzip"})
        elif path == "/gzip-bomb":
            self._send(h, 200, gzip_bomb(), {"Content-Encoding": "gzip"})
        elif path == "/huge":
            self._headers(h, 200, {"Connection": "close"})
            h.close_connection = True
            block = (b"<p>" + b"filler text " * 85 + b"</p>\n")[:1024] * 64
            sent = 0
            while sent < HUGE_BYTES and not self._stop.is_set():
                h.wfile.write(block)
                sent += len(block)
        elif path == "/huge-declared":
            self._headers(h, 200, {"Content-Length": str(HUGE_BYTES)})
            h.wfile.write(b"<html>" + b" " * 1024)
            h.close_connection = True
        elif path == "/binary":
            self._send(h, 200, PNG, {"Content-Type": "image/png"})
        elif path == "/binary-as-html":
            self._send(h, 200, PNG, {"Content-Type": "text/html"})
        elif head == "loop" and len(parts) == 2:
            target = "/loop/b" if parts[1] == "a" else "/loop/a"
            self._send(h, 302, b"", {"Location": target})
        elif head == "chain" and len(parts) == 2 and parts[1].isdigit():
            n = int(parts[1])
            if n >= 100:
                self._send(h, 404, b"end of chain")
            else:
                self._send(h, 302, b"", {"Location": f"/chain/{n + 1}"})
        elif head == "redirect" and len(parts) == 2 and parts[1] in self.redirects:
            self._send(h, 302, b"", {"Location": self.redirects[parts[1]]})
        elif head in ("article", "private"):
            self._send(h, 200, article)
        else:
            self._send(h, 404, b"not found")

    def _linger(self, h: BaseHTTPRequestHandler, seconds: float) -> bool:
        """Waits up to ``seconds``; False as soon as the client hangs up or the server stops.

        Noticing the hang-up matters: a handler still running after its client gave up
        would count as a request in flight and inflate ``peak``.
        """
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._stop.is_set():
                return False
            readable, _, _ = select.select([h.connection], [], [], 0.01)
            if readable:
                try:
                    if not h.connection.recv(1, socket.MSG_PEEK):
                        return False
                except OSError:
                    return False
        return True

    @staticmethod
    def _headers(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "text/html; charset=utf-8")
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()


def wait_until(predicate, timeout: float = 5.0) -> bool:
    """Polls ``predicate`` every 10 ms for at most ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
