"""Sitemaps, sitemap indexes, Google News sitemaps and robots.txt Sitemap lines as
sources: the parser on its own, then end to end over loopback through the real pipeline
(Parquet read back), limits and malformed documents included."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.ingest import run
from schemas import FeedSpec
from tests.loopback import Site, article_html
from transforms.feeds.sitemaps import (
    parse_sitemap,
    robots_sitemaps,
    sitemap_entry,
    w3c_datetime,
)

NOW = dt.datetime(2024, 11, 26, 12, 0, tzinfo=dt.UTC)
NS = ('xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
      'xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"')


def news_url(loc: str, title: str, published: str = "2024-11-25T06:30:00+00:00",
             language: str = "en") -> str:
    return (f"<url><loc>{loc}</loc><news:news><news:publication><news:name>Harbour News"
            f"</news:name><news:language>{language}</news:language></news:publication>"
            f"<news:publication_date>{published}</news:publication_date>"
            f"<news:title>{title}</news:title><news:keywords>harbour, council"
            f"</news:keywords></news:news></url>")


def urlset(*urls: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{"".join(urls)}</urlset>'


def index(*locs: str) -> str:
    items = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{items}</sitemapindex>'


# -- the parser ------------------------------------------------------------------------------


def test_a_news_sitemap_gives_titles_dates_languages_and_keywords():
    body = urlset(news_url("https://example.org/a.html", "Budget agreed"),
                  "<url><loc>/b.html</loc><lastmod>2024-11-24</lastmod></url>",
                  "<url><lastmod>2024-11-24</lastmod></url>")
    doc = parse_sitemap(body.encode(), "https://example.org/sitemap.xml", 1 << 20)
    assert doc.kind == "urlset" and len(doc.urls) == 3
    spec = FeedSpec(url="https://example.org/sitemap.xml", kind="sitemap")
    a, b, c = (sitemap_entry(u, spec, "https://example.org/sitemap.xml", NOW)
               for u in doc.urls)
    assert (a.title, a.language_hint, a.source, a.categories) == (
        "Budget agreed", "en", "Harbour News", ("harbour", "council"))
    assert a.published_at == dt.datetime(2024, 11, 25, 6, 30, tzinfo=dt.UTC)
    assert a.feed_url == spec.url and a.guid == "https://example.org/a.html"
    # A relative <loc> is resolved; <lastmod> stands in for the publication date.
    assert b.url == "https://example.org/b.html"
    assert b.published_at == dt.datetime(2024, 11, 24, tzinfo=dt.UTC)
    assert c[1:] == ("missing_link", "sitemap <url> has no <loc>")


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html><body>not a sitemap</body></html>", "not_a_sitemap"),
    (b"<urlset><url><loc>https://e.org/a</loc></url>", "malformed_sitemap"),
    (b'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY x "boom">]><urlset>&x;</urlset>',
     "unsafe_xml"),
    (b"\x1f\x8b\x08\x00not really gzip", "malformed_sitemap"),
    (gzip.compress(b"<urlset>" + b" " * 5000 + b"</urlset>"), "too_large"),
])
def test_bad_documents_have_a_reason(body, reason):
    doc = parse_sitemap(body, "https://e.org/s.xml", 4096)
    assert doc.reason == reason and doc.message


def test_gzip_index_and_dates_and_robots_lines():
    doc = parse_sitemap(gzip.compress(index("/s1.xml", "https://e.org/s2.xml.gz").encode()),
                        "https://e.org/index.xml", 1 << 20)
    assert doc.kind == "index" and doc.children == ["https://e.org/s1.xml",
                                                    "https://e.org/s2.xml.gz"]
    assert w3c_datetime("2024-11-25T08:00:00+02:00") == dt.datetime(2024, 11, 25, 6,
                                                                      tzinfo=dt.UTC)
    assert w3c_datetime("25/11/2024") is None and w3c_datetime("") is None
    robots = b"User-agent: *\nDisallow: /private\nSitemap: /news.xml\nSitemap: /news.xml\n"
    assert robots_sitemaps(robots, "https://e.org/robots.txt") == ["https://e.org/news.xml"]


# -- end to end --------------------------------------------------------------------------


def table(out: Path, name: str) -> list[dict]:
    if not (out / name).exists():
        return []
    return ds.dataset(out / name, format="parquet", partitioning="hive").to_table().to_pylist()


TITLES = ["Budget agreed", "Ferry timetable", "Storm warning", "School reopens",
          "Market prices"]


def pages(site: Site) -> list[str]:
    """Serves one article page per title; returns their URLs."""
    urls = []
    for i, title in enumerate(TITLES):
        path = f"/news/{i}.html"
        site.files[path] = ("text/html", article_html(title))
        urls.append(f"{site.base}{path}")
    return urls


def ingest(tmp_path: Path, yaml_text: str, out: str = "out", *extra: str):
    config = tmp_path / f"{out}.yaml"
    config.write_text(yaml_text, encoding="utf-8")
    return run(["--feeds", str(config), "--output", str(tmp_path / out),
                "--allow-private-network", "--per-host-delay", "0",
                "--story-similarity", "lexical", *extra], quiet=True)[1]


def test_sitemap_index_with_gzip_and_news_sitemaps_end_to_end_and_a_rerun_fetches_nothing(
        tmp_path):
    with Site() as site:
        urls = pages(site)
        site.files["/news-1.xml"] = ("application/xml", urlset(
            news_url(urls[0], TITLES[0]), news_url(urls[1], TITLES[1])))
        site.files["/news-2.xml.gz"] = ("application/x-gzip", gzip.compress(urlset(
            news_url(urls[2], TITLES[2], language="en"),
            news_url(urls[0], TITLES[0])).encode()))  # listed twice: one entry
        site.files["/index.xml"] = ("application/xml", index(
            f"{site.base}/news-1.xml", "/news-2.xml.gz", "/missing.xml"))
        yaml_text = f"feeds:\n  - sitemap: {site.base}/index.xml\n    name: Harbour\n"
        s = ingest(tmp_path, yaml_text)
        fetched = [p for p, _ in site.log]
        site.log.clear()
        again = ingest(tmp_path, yaml_text)
        second = [p for p, _ in site.log]
        # --refetch reads the sources in the pipeline's own feed stage: the same outcome.
        refetched = ingest(tmp_path, yaml_text, "refetched", "--refetch")
    articles, errors = table(tmp_path / "out", "articles"), table(tmp_path / "out", "errors")
    assert sorted(a["title"] for a in articles) == sorted(TITLES[:3])
    assert {a["feed_url"] for a in articles} == {f"{site.base}/index.xml"}
    assert {a["source"] for a in articles} == {"Harbour"}
    assert all(a["published_at"] == dt.datetime(2024, 11, 25, 6, 30, tzinfo=dt.UTC)
               for a in articles)
    # The missing child sitemap is one feed-level error; the rest is read.
    assert [(e["level"], e["stage"], e["reason"]) for e in errors] == [
        ("feed", "fetch_sitemap", "http_404")]
    assert s.balanced and s.entries_read == 3
    assert {"/news/0.html", "/news/1.html", "/news/2.html"} <= set(fetched)
    # A re-run asks for the index with its validators (this server sends none, so it is
    # read again) but fetches no article page and adds no row.
    assert not any(p.startswith("/news/") and p.endswith(".html") for p in second)
    assert again.entries_read == 0 and again.articles == 0 and again.balanced
    assert len(table(tmp_path / "out", "articles")) == 3
    assert sorted(a["title"] for a in table(tmp_path / "refetched", "articles")) == sorted(
        TITLES[:3])
    assert [e["reason"] for e in table(tmp_path / "refetched", "errors")] == ["http_404"]
    assert refetched.balanced and refetched.entries_read == 3


def test_robots_sitemap_lines_limits_and_malformed_sitemaps_end_to_end(tmp_path):
    with Site() as site:
        urls = pages(site)
        site.files["/robots.txt"] = ("text/plain", f"User-agent: *\nAllow: /\n"
                                                   f"Sitemap: {site.base}/broken.xml\n"
                                                   f"Sitemap: {site.base}/all.xml\n"
                                                   f"Sitemap: {site.base}/more.xml\n")
        site.files["/all.xml"] = ("application/xml", urlset(
            *(news_url(u, t) for u, t in zip(urls, TITLES, strict=True))))
        site.files["/broken.xml"] = ("application/xml", "<urlset><url><loc>oops")
        site.files["/deep.xml"] = ("application/xml", index("/deeper.xml"))
        site.files["/deeper.xml"] = ("application/xml", index("/all.xml"))
        site.files["/html.xml"] = ("text/html", "<html><body>Sorry</body></html>")
        s = ingest(tmp_path, f"""feeds:
  - site: {site.base}
    max_urls: 3
  - sitemap: {site.base}/deep.xml
    max_depth: 1
  - sitemap: {site.base}/html.xml
  - sitemap: {site.base}/nothing.xml
  - site: {site.base}/
    max_urls: 0
""")
    articles, errors = table(tmp_path / "out", "articles"), table(tmp_path / "out", "errors")
    # max_urls 3: the first three URLs of the site's sitemap, in document order.
    assert sorted(a["title"] for a in articles) == sorted(TITLES[:3])
    reasons = sorted((e["reason"], e["url"].removeprefix(site.base)) for e in errors)
    assert reasons == [
        ("bad_source", str(tmp_path / "out.yaml") + "#feeds[4]"),
        ("http_404", "/nothing.xml"),
        ("malformed_sitemap", "/broken.xml"),
        ("not_a_sitemap", "/html.xml"),
        ("too_deep", "/deeper.xml"),
        ("too_many_urls", ""),
        ("too_many_urls", "/more.xml"),
    ]
    by_reason = {e["reason"]: e for e in errors}
    left_out = [e["message"] for e in errors if e["reason"] == "too_many_urls"]
    assert sorted(left_out) == ["2 page URL(s) beyond max_urls 3 left out",
                                "max_urls 3 reached; sitemap not read"]
    assert "max_urls must be a whole number of at least 1" in by_reason["bad_source"]["message"]
    assert s.balanced and s.entries_read == 3


def test_polling_a_sitemap_source_uses_its_validators(tmp_path):
    """The poll used by watch and the streaming pipeline: a 200 with entries and an ETag,
    then a 304 that lists nothing."""
    from pipelines.demo.server import SiteServer
    from transforms.feeds.polling import FeedState, poll_feed
    from transforms.fetching.http import FetchPolicy
    from transforms.fetching.politeness import PoliteFetcher

    with SiteServer(tmp_path) as server:
        server.set_file("/news.xml", urlset(news_url(server.url("/a.html"), "Budget agreed"),
                                            news_url(server.url("/b.html"), "Storm warning")))
        spec = FeedSpec(url=server.url("/news.xml"), kind="sitemap")
        fetcher = PoliteFetcher(FetchPolicy(allow_private_network=True, per_host_delay=0),
                                threads=2)
        try:
            first = poll_feed(fetcher, spec, FeedState(), NOW)
            second = poll_feed(fetcher, spec, first.state, NOW + dt.timedelta(minutes=5))
        finally:
            fetcher.close()
        logged = [(r.path, r.status, r.conditional) for r in server.requests
                  if r.path == "/news.xml"]
    assert first.status == "fetched" and first.state.etag
    assert [e.title for e in first.entries] == ["Budget agreed", "Storm warning"]
    assert second.status == "not_modified" and second.entries == []
    assert logged == [("/news.xml", 200, False), ("/news.xml", 304, True)]
