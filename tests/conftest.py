"""Shared fixtures: a tiny loopback web site whose pages the test defines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class PagesServer:
    """Serves ``pages[path] = (status, content_type, body, headers)`` on 127.0.0.1."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        self.hits: dict[str, int] = {}
        pages, hits = self.pages, self.hits
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                with lock:
                    hits[self.path] = hits.get(self.path, 0) + 1
                status, ctype, body, extra = pages.get(
                    self.path, (404, "text/html", b"not found", {}))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, body: str | bytes, content_type: str = "text/html; charset=utf-8",
            status: int = 200, headers: dict[str, str] | None = None) -> str:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.pages[path] = (status, content_type, data, dict(headers or {}))
        return self.base_url + path

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def pages_server() -> Iterator[PagesServer]:
    server = PagesServer()
    try:
        yield server
    finally:
        server.close()


def article_html(title: str, paragraphs: list[str]) -> str:
    """A plausible news page: navigation and footer around an <article>."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!doctype html><html><head><title>{title}</title>"
            f'<meta name="author" content="Test Writer"></head><body>'
            f"<nav><a href='/'>Home</a> <a href='/world'>World</a></nav>"
            f"<article><h1>{title}</h1>{body}</article>"
            f"<footer>All rights reserved. Subscribe to our newsletter.</footer></body></html>")


def rss(title: str, items: list[dict]) -> str:
    """An RSS 2.0 document from dicts with title, link, guid, pubDate, category, description."""
    parts = []
    for it in items:
        fields = "".join(
            f"<{k}>{v}</{k}>" for k, v in it.items() if k != "category" and v is not None)
        cats = "".join(f"<category>{c}</category>" for c in it.get("category", []) or [])
        parts.append(f"<item>{fields}{cats}</item>")
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>{title}</title><link>http://example.invalid/</link>"
            f"{''.join(parts)}</channel></rss>")
