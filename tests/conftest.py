"""Shared fixtures: a loopback web site whose pages the test defines (the project's one
loopback server, :class:`pipelines.demo.server.SiteServer`, with no folder behind it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipelines.demo.server import SiteServer


@pytest.fixture
def pages_server() -> Iterator[SiteServer]:
    """Pages added with ``pages_server.add(path, body, content_type, status, headers)``;
    ``pages_server.count(path)`` tells how often one was requested."""
    with SiteServer(root=None) as server:
        yield server


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
