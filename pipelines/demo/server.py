"""The project's loopback web server: the demo site, the tests' sites and the benches'.

Size: about 530 lines, one server whose HTTP behaviour (validators, gzip, overrides,
request log, gate) every user of it relies on together; the handler and the site are
read side by side.

:class:`SiteServer` serves a folder (by default the bundled ``site/``; ``root=None`` for
none) and pages held in memory on 127.0.0.1 at an ephemeral port, from a daemon thread,
behaving enough like a real news site for the pipeline's HTTP layer to be exercised for
real. It ships with the package because ``newsbeam demo`` serves the demo corpus with it;
tests (``tests/conftest.py``'s ``pages_server``, the polling tests) and benchmarks
(``bench/synthetic_site.py``) use the same class:

* ``{{BASE}}`` in text files is replaced by the server's base URL at serve time;
* feeds, pages and lists get a proper ``Content-Type``, ``Content-Length``,
  ``Last-Modified`` and a strong ``ETag``; conditional requests (``If-None-Match``,
  ``If-Modified-Since``) are answered with ``304``;
* bodies are gzipped when the request accepts it;
* nothing outside the root is reachable (``404``);
* every request is logged as ``(method, path, status, conditional)``, and when it
  arrived by the server's clock (``time.monotonic`` unless one is given) in
  :attr:`SiteServer.arrivals`, index for index;
* a page can be given exactly (:meth:`SiteServer.add`: status, content type, headers,
  body), a response forced on a path (:attr:`SiteServer.overrides`), or a file's content
  replaced in memory (:meth:`SiteServer.set_file`) between polls;
* ``latency`` delays every response (benchmarks that model a slow site), and a closed
  :attr:`SiteServer.gate` holds every request until it is opened (tests that must act
  while a client is known to be waiting on the site; :attr:`SiteServer.held` counts them).

Run ``python -m pipelines.demo.server [--port N]`` to browse the demo site.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import gzip
import hashlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from pipelines.demo import PLACEHOLDER, SITE_DIR

TEXT_EXTENSIONS = frozenset(
    {".xml", ".html", ".htm", ".yaml", ".yml", ".opml", ".txt", ".json", ".rss", ".atom"}
)
"""Files with these extensions get ``{{BASE}}`` substituted when served."""

CONTENT_TYPES = {
    ".xml": "application/rss+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".json": "application/feed+json",
}
TEXT_PLAIN = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"

NOT_FOUND_BODY = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    b"<title>404 Not Found</title></head>\n<body><h1>Not Found</h1>"
    b"<p>There is no page at this address on the demo site.</p></body></html>\n"
)

_BODILESS = {HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED}
GATE_TIMEOUT = 60.0
"""Longest a request waits at a closed :attr:`SiteServer.gate` (then it is answered)."""


class RequestRecord(NamedTuple):
    """One logged request; a plain tuple ``(method, path, status, conditional)``."""

    method: str
    path: str
    """The request target as sent, query string included."""
    status: int
    conditional: bool
    """Whether the request carried ``If-None-Match`` or ``If-Modified-Since``."""


class _Resource(NamedTuple):
    body: bytes
    modified: float
    content_type: str


def content_type_for(path: str) -> str:
    """The ``Content-Type`` served for a path, chosen by its extension."""
    suffix = Path(path).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    return TEXT_PLAIN if suffix in TEXT_EXTENSIONS or not suffix else BINARY


def _normalise_key(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _accepts_gzip(header: str | None) -> bool:
    if not header:
        return False
    for part in header.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


def _etag_matches(header: str, etags: Sequence[str]) -> bool:
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate in etags:
            return True
    return False


def _not_modified_since(header: str, modified: float) -> bool:
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since is None or since.tzinfo is None:
        return False
    return int(modified) <= since.timestamp()


class _HTTPServer(ThreadingHTTPServer):
    """Keeps track of open connections so that stopping really stops."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], site: SiteServer) -> None:
        self.site = site
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return  # client went away: not interesting for a demo server
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "NewsbeamDemo/1.0"
    sys_version = ""
    timeout = 5  # idle keep-alive connections are closed after this many seconds

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def parse_request(self) -> bool:
        # The request line and headers are in: this is when the request arrived.
        self._arrived = self.server.site.clock()
        return super().parse_request()

    def _method_not_allowed(self) -> None:
        self._record(HTTPStatus.METHOD_NOT_ALLOWED)
        self.close_connection = True  # any request body is left unread
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the request log lives in :attr:`SiteServer.requests`."""

    # -- internals ---------------------------------------------------------------------

    def _conditional(self) -> bool:
        return "If-None-Match" in self.headers or "If-Modified-Since" in self.headers

    def _record(self, status: int) -> None:
        self.server.site._record(self.command, self.path, int(status), self._conditional(),
                                 self._arrived)

    def _write(self, body: bytes, head: bool) -> None:
        if not head and body:
            self.wfile.write(body)

    def _respond(self, head: bool) -> None:
        site = self.server.site
        if site.latency > 0:
            time.sleep(site.latency)  # a slow site, as benchmarks model it
        gate = site.gate
        if gate is not None:
            with site._lock:
                site.held += 1
            gate.wait(GATE_TIMEOUT)
        path = urlsplit(self.path).path or "/"
        override = site._override_for(self.path, path)
        if override is not None:
            self._send_override(*override, head=head)
            return
        resource = site._resource_for(path)
        if resource is None:
            self._record(HTTPStatus.NOT_FOUND)
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(NOT_FOUND_BODY)))
            self.end_headers()
            self._write(NOT_FOUND_BODY, head)
            return

        digest = hashlib.sha256(resource.body).hexdigest()[:32]
        etag, gzip_etag = f'"{digest}"', f'"{digest}-gzip"'
        use_gzip = _accepts_gzip(self.headers.get("Accept-Encoding")) and bool(resource.body)
        last_modified = email.utils.formatdate(resource.modified, usegmt=True)

        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            not_modified = _etag_matches(if_none_match, (etag, gzip_etag))
        else:
            if_modified_since = self.headers.get("If-Modified-Since")
            not_modified = bool(if_modified_since) and _not_modified_since(
                if_modified_since, resource.modified)

        if not_modified:
            self._record(HTTPStatus.NOT_MODIFIED)
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", gzip_etag if use_gzip else etag)
            self.send_header("Last-Modified", last_modified)
            self.send_header("Vary", "Accept-Encoding")
            self.end_headers()
            return

        body = gzip.compress(resource.body, mtime=0) if use_gzip else resource.body
        self._record(HTTPStatus.OK)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", resource.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", last_modified)
        self.send_header("ETag", gzip_etag if use_gzip else etag)
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Cache-Control", "no-cache")
        if use_gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self._write(body, head)

    def _send_override(self, status: int, headers: dict[str, str], body: bytes,
                       head: bool) -> None:
        site = self.server.site
        body = site._substitute(body)
        self._record(status)
        self.send_response(status)
        names = {name.lower() for name in headers}
        for name, value in headers.items():
            self.send_header(name, site._substitute(str(value).encode()).decode())
        if status in _BODILESS or 100 <= status < 200:
            self.end_headers()
            return
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(body)))
        if "content-type" not in names:
            self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self._write(body, head)


class SiteServer:
    """Serves ``root`` on ``http://127.0.0.1:<ephemeral port>`` from a daemon thread.

    Use as a context manager (``with SiteServer() as server: ...``) or call
    :meth:`start` and :meth:`stop`.

    Attributes:
        requests: the request log, a list of :class:`RequestRecord` tuples
            ``(method, path, status, conditional)`` in the order responses began.
        arrivals: when each of those requests arrived (its headers were read), by
            ``clock``, index for index with ``requests``.
        overrides: ``{path: (status, headers, body)}``; a request whose target (query
            included) or path matches a key gets exactly that response, e.g.
            ``server.overrides["/a/feed.xml"] = (503, {"Retry-After": "1"}, b"")``.
            ``{{BASE}}`` is substituted in header values and the body.
    """

    def __init__(self, root: str | Path | None = SITE_DIR, *, host: str = "127.0.0.1",
                 port: int = 0, stop_timeout: float = 5.0, latency: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = None if root is None else Path(root).resolve()
        self.host = host
        self.port = port
        self.stop_timeout = stop_timeout
        self.latency = latency
        self.clock = clock
        self.requests: list[RequestRecord] = []
        self.arrivals: list[float] = []
        self.gate: threading.Event | None = None
        self.held = 0
        self.overrides: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self._files: dict[str, _Resource] = {}
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url = ""
        self._placeholder = PLACEHOLDER.encode()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> SiteServer:
        """Binds the socket and starts serving; returns ``self``. Idempotent."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), self)
        host, port = httpd.server_address[:2]
        self._base_url = f"http://{host}:{port}"
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"SiteServer:{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, closes the socket and open connections; bounded in time."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        if thread is not None and thread.is_alive():
            stopper = threading.Thread(target=httpd.shutdown, daemon=True)
            stopper.start()
            stopper.join(self.stop_timeout)
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(self.stop_timeout)

    def __enter__(self) -> SiteServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash); only valid once started."""
        if not self._base_url:
            raise RuntimeError("SiteServer has not been started")
        return self._base_url

    def url(self, path: str) -> str:
        """The absolute URL of a site path, e.g. ``url("/feeds.yaml")``."""
        return self.base_url + _normalise_key(path)

    # -- test hooks ----------------------------------------------------------------

    def add(self, path: str, body: str | bytes, content_type: str = "text/html; charset=utf-8",
            status: int = 200, headers: dict[str, str] | None = None) -> str:
        """Serves exactly this response at ``path`` (no gzip, no validators); returns its
        URL. ``{{BASE}}`` is substituted as for files."""
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self.overrides[path] = (status, {"Content-Type": content_type, **(headers or {})},
                                data)
        return self.base_url + path

    def set_file(self, path: str, text: str | bytes) -> None:
        """Serves ``text`` at ``path`` instead of (or in addition to) the file on disk.

        ``{{BASE}}`` is substituted as for files on disk. ``Last-Modified`` moves forward
        by at least a second on every call, so conditional requests see the change.
        """
        key = _normalise_key(path)
        body = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        with self._lock:
            previous = self._files.get(key)
            modified = time.time()
            if previous is not None:
                modified = max(modified, previous.modified + 1)
            else:
                disk = self._disk_path(key)
                if disk is not None:
                    modified = max(modified, disk.stat().st_mtime + 1)
            self._files[key] = _Resource(body, modified, content_type_for(key))

    def unset_file(self, path: str) -> None:
        """Forgets in-memory content set with :meth:`set_file` (the disk file returns)."""
        with self._lock:
            self._files.pop(_normalise_key(path), None)

    def count(self, path: str, method: str | None = None) -> int:
        """How many logged requests hit ``path`` (with or without a query string)."""
        with self._lock:
            records = list(self.requests)
        return sum(1 for r in records
                   if (r.path == path or r.path.split("?", 1)[0] == path)
                   and (method is None or r.method == method))

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.arrivals.clear()

    def reset(self) -> None:
        """Drops overrides, in-memory files and the request log."""
        with self._lock:
            self.requests.clear()
            self.arrivals.clear()
            self._files.clear()
        self.overrides.clear()

    # -- used by the handler -------------------------------------------------------

    def _record(self, method: str, path: str, status: int, conditional: bool,
                at: float) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, status, conditional))
            self.arrivals.append(at)

    def _substitute(self, data: bytes) -> bytes:
        if self._placeholder in data:
            return data.replace(self._placeholder, self._base_url.encode())
        return data

    def _override_for(self, target: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        overrides = self.overrides
        for key in (target, path, unquote(path)):
            if key in overrides:
                status, headers, body = overrides[key]
                return int(status), dict(headers or {}), bytes(body or b"")
        return None

    def _disk_path(self, path: str) -> Path | None:
        if self.root is None:
            return None
        relative = unquote(path).lstrip("/")
        if "\x00" in relative or "\\" in relative:
            return None
        try:
            candidate = (self.root / relative).resolve()
        except (OSError, RuntimeError):
            return None
        if not candidate.is_relative_to(self.root):
            return None
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_file() else None

    def _resource_for(self, path: str) -> _Resource | None:
        with self._lock:
            resource = self._files.get(path) or self._files.get(unquote(path))
        if resource is None:
            disk = self._disk_path(path)
            if disk is None:
                return None
            try:
                body, modified = disk.read_bytes(), disk.stat().st_mtime
            except OSError:
                return None
            resource = _Resource(body, modified, content_type_for(disk.name))
            text = disk.suffix.lower() in TEXT_EXTENSIONS
        else:
            text = Path(path).suffix.lower() in TEXT_EXTENSIONS or not Path(path).suffix
        if text:
            resource = resource._replace(body=self._substitute(resource.body))
        return resource


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo.server",
        description="Serve the newsbeam demo corpus on loopback until interrupted.")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on (default: any free port)")
    parser.add_argument("--root", type=Path, default=SITE_DIR,
                        help="folder to serve (default: the bundled demo site)")
    args = parser.parse_args(argv)
    with SiteServer(args.root, port=args.port) as server:
        print(f"Serving {server.root} at {server.base_url}", flush=True)
        print(f"Feed list: {server.base_url}/feeds.yaml  (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("Stopping.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
