"""Feed parsing (RSS, JSON Feed, hostile XML) and the feed stage on loopback."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tracemalloc

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import FeedSpec
from tests.conftest import rss
from tests.faults import FaultServer
from transforms.feeds.jsonfeed import JsonFeedError, looks_like_json_feed, parse_json_feed
from transforms.feeds.parse import ReadFeeds, parse_feed, strip_doctype, unsafe_xml
from transforms.fetching.http import FetchPolicy

NOW = dt.datetime(2024, 11, 23, 12, 0, tzinfo=dt.UTC)
SPEC = FeedSpec(url="http://public.test/feed")

JSON_FEED_11 = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "Harbour Ledger",
    "home_page_url": "https://harbour.example/",
    "language": "en-GB",
    "authors": [{"name": "Desk"}],
    "items": [
        {"id": "2", "url": "https://harbour.example/2024/11/ferry?utm_source=x",
         "title": "Night ferry stays", "content_html": "<p>The night <b>ferry</b> runs.</p>",
         "summary": "Ferry runs twice a week.", "date_published": "2024-11-21T08:30:00+01:00",
         "authors": [{"name": "Mira Solberg"}], "tags": ["transport", "islands"]},
        {"id": 3, "external_url": "https://elsewhere.example/story", "title": "Linked",
         "content_text": "Plain text body.", "date_modified": "2024-11-20T10:00:00Z"},
        {"id": "4", "title": "No URL at all", "content_text": "Orphan."},
        "not an object",
    ],
}
JSON_FEED_10 = {
    "version": "https://jsonfeed.org/version/1",
    "title": "Old style",
    "author": {"name": "Single Author"},
    "items": [{"id": "a", "url": "https://old.example/a", "content_text": "Body A.",
               "date_published": "2024-11-01T00:00:00Z"}],
}


# -- JSON Feed -------------------------------------------------------------------------------

def test_json_feed_11_is_parsed():
    body = json.dumps(JSON_FEED_11).encode()
    assert looks_like_json_feed(body, {"content-type": "text/plain"})
    parsed = parse_feed(body, {"content-type": "application/feed+json"}, SPEC, NOW)
    assert parsed.kind == "json" and parsed.title == "Harbour Ledger"
    assert [e.url for e in parsed.entries] == ["https://harbour.example/2024/11/ferry",
                                               "https://elsewhere.example/story"]
    first, second = parsed.entries
    assert first.guid == "2" and first.title == "Night ferry stays"
    assert first.content == "The night ferry runs." and first.summary.startswith("Ferry")
    assert first.published_at == dt.datetime(2024, 11, 21, 7, 30, tzinfo=dt.UTC)
    assert first.authors == ("Mira Solberg",) and first.categories == ("transport", "islands")
    assert first.language_hint == "en" and first.source == "Harbour Ledger"
    assert second.guid == "3" and second.authors == ("Desk",)  # feed-level authors inherited
    assert second.published_at == dt.datetime(2024, 11, 20, 10, 0, tzinfo=dt.UTC)
    assert [p[1:] for p in parsed.problems] == [
        ("missing_link", "feed entry has no link"),
        ("bad_entry", "item is a JSON string, not an object")]


def test_json_feed_10_is_parsed():
    parsed = parse_feed(json.dumps(JSON_FEED_10).encode(), {}, SPEC, NOW)
    assert parsed.kind == "json"
    (entry,) = parsed.entries
    assert entry.authors == ("Single Author",) and entry.content == "Body A."


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"version": "2", "items": []}',
                                  b'{"version": "https://jsonfeed.org/version/1.1"}'])
def test_bad_json_feeds_are_reported(body):
    with pytest.raises(JsonFeedError):
        parse_json_feed(body)
    parsed = parse_feed(body, {"content-type": "application/feed+json"}, SPEC, NOW)
    assert (parsed.entries, parsed.reason) == ([], "malformed_feed") and parsed.bozo


# -- hostile XML -----------------------------------------------------------------------------

def _laughs(levels: int = 9) -> bytes:
    decls = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels + 1)]
    return (f'<?xml version="1.0"?><!DOCTYPE rss [{"".join(decls)}]><rss version="2.0">'
            f"<channel><title>&lol{levels};</title><item><title>&lol{levels};</title>"
            f"<link>http://a.test/1</link></item></channel></rss>").encode()


def test_external_entities_cannot_read_local_files(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42", encoding="utf-8")
    body = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>'
            f'<rss version="2.0"><channel><title>&xxe;</title><item><title>&xxe;</title>'
            f"<link>http://a.test/1</link></item></channel></rss>").encode()
    parsed = parse_feed(body, {}, SPEC, NOW)
    # The DOCTYPE is removed: the feed is read, the reference stays unexpanded.
    assert parsed.dtd_removed == "external entity 'xxe'"
    assert [e.url for e in parsed.entries] == ["http://a.test/1"]
    assert "TOPSECRET" not in repr(parsed)


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE rss SYSTEM "http://169.254.169.254/dtd">',  # external DTD: never fetched
    '<!DOCTYPE rss [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
    '<!DOCTYPE rss [<!ENTITY e PUBLIC "-//X//Y" "file:///etc/hostname">]>',
])
def test_external_dtd_and_parameter_entities(doctype):
    body = (f'<?xml version="1.0"?>{doctype}<rss version="2.0"><channel><title>t</title>'
            f"<item><title>x</title><link>http://a.test/1</link></item></channel></rss>").encode()
    parsed = parse_feed(body, {}, SPEC, NOW)
    # Parsed without reading anything; entity declarations were removed first.
    assert [e.title for e in parsed.entries] == ["x"]
    assert bool(parsed.dtd_removed) == ("ENTITY" in doctype)


def test_billion_laughs_is_refused_small():
    # Time is measured by bench/bench_feeds.py; memory is the deterministic sign that no
    # entity expanded.
    tracemalloc.start()
    parsed = parse_feed(_laughs(), {}, SPEC, NOW)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert parsed.dtd_removed and [e.url for e in parsed.entries] == ["http://a.test/1"]
    assert all(len(e.title) < 100 for e in parsed.entries)
    assert peak < 5 * 1024 * 1024


def test_entity_checks_survive_other_encodings():
    body = _laughs(4).decode().replace('version="1.0"?>', 'version="1.0" encoding="utf-16"?>')
    assert unsafe_xml(body.encode("utf-16"))
    body1251 = _laughs(4).decode().replace('version="1.0"?>',
                                           'version="1.0" encoding="windows-1251"?>')
    assert unsafe_xml(body1251.encode("cp1251"))
    broken = b"\x00garbage" + _laughs(4)  # expat fails first: the textual check catches it
    assert unsafe_xml(broken)


def test_strip_doctype():
    body = b'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "&b;">]>\n<rss/>'
    assert strip_doctype(body) == b'<?xml version="1.0"?>\n\n<rss/>'
    assert strip_doctype(b'<!DOCTYPE rss SYSTEM "x.dtd"><rss/>') == b"<rss/>"
    assert strip_doctype(b'<!DOCTYPE rss [<!ENTITY a "x">') is None  # unterminated
    assert strip_doctype(_laughs(2).decode().encode("utf-16")) is None


def test_unsafe_feed_that_cannot_be_cleaned_is_refused():
    body = _laughs(4).decode().replace('version="1.0"?>', 'version="1.0" encoding="utf-16"?>')
    parsed = parse_feed(body.encode("utf-16"), {}, SPEC, NOW)
    assert (parsed.entries, parsed.reason) == ([], "unsafe_xml") and parsed.bozo


def test_plain_internal_entities_still_work():
    body = (b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY outlet "Harbour Ledger">\n]>\n'
            b'<rss version="2.0"><channel><title>&outlet;</title><item><title>By &outlet;'
            b"</title><link>http://a.test/1</link></item></channel></rss>")
    assert unsafe_xml(body) is None
    parsed = parse_feed(body, {}, SPEC, NOW)
    assert [e.title for e in parsed.entries] == ["By Harbour Ledger"]


def test_gzip_body_without_content_encoding_is_inflated():
    body = gzip.compress(rss("Zipped", [{"title": "One", "link": "http://a.test/1"}]).encode())
    parsed = parse_feed(body, {"content-type": "application/x-gzip"}, SPEC, NOW)
    assert [e.url for e in parsed.entries] == ["http://a.test/1"]
    truncated = parse_feed(body[: len(body) // 2], {}, SPEC, NOW)
    assert truncated.reason == "malformed_feed" and not truncated.entries


# -- the feed stage on loopback ------------------------------------------------------------

def test_read_feeds_stage_against_the_fault_server():
    with FaultServer() as server:
        def url(path: str) -> str:
            return server.url("public.test", path)

        server.add("/rss.xml", rss("Harbour", [
            {"title": "One", "link": url("/article/one"), "guid": "g1"},
            {"title": "Ftp", "link": "ftp://public.test/file", "guid": "g2"}]),
            content_type="application/rss+xml")
        server.add("/feed.json", json.dumps(JSON_FEED_10), content_type="application/feed+json")
        server.add("/bomb.xml", _laughs(), content_type="application/xml")
        server.add("/picture.xml", b"\x89PNG....", content_type="image/png")
        specs = [FeedSpec(url=url(p)) for p in
                 ("/rss.xml", "/feed.json", "/bomb.xml", "/picture.xml", "/status/404",
                  "/private/feed.xml", "/status/500")]
        policy = FetchPolicy(host_overrides=(("public.test", "127.0.0.1"),),
                             per_host_delay=0.0, backoff_initial=0.01, backoff_max=0.02)
        with TestPipeline() as p:
            out = p | beam.Create(specs) | ReadFeeds(policy, threads=4)
            assert_that(out.entries | "Urls" >> beam.Map(lambda e: e.url),
                        equal_to([url("/article/one"), "https://old.example/a",
                                  "http://a.test/1"]),
                        label="Entries")
            assert_that(out.errors | "Reasons" >> beam.Map(
                lambda r: (r.url.rsplit("/", 1)[-1], r.stage, r.reason, r.attempts)),
                equal_to([("file", "parse_feed", "unsupported_scheme", 1),
                          ("picture.xml", "fetch_feed", "bad_content_type", 1),
                          ("404", "fetch_feed", "http_404", 1),
                          ("feed.xml", "fetch_feed", "robots_disallowed", 0),
                          ("500", "fetch_feed", "http_500", 3)]), label="Errors")


def _links(body: bytes, headers=None, spec=SPEC, location=None):
    parsed = parse_feed(body, headers or {}, spec, NOW, location=location)
    return [e.url for e in parsed.entries], parsed.problems


def test_relative_links_are_resolved_against_the_feed_and_xml_base():
    spec = FeedSpec(url="https://site.example/news/feed.xml")
    items = (b"<item><title>a</title><link>/p/a.html</link></item>"
             b"<item><title>b</title><link>b.html</link></item>"
             b'<item xml:base="https://other.example/x/"><title>c</title>'
             b"<link>c.html</link></item>")
    rss_doc = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>%s' \
              b"</channel></rss>" % items
    assert _links(rss_doc, spec=spec)[0] == ["https://site.example/p/a.html",
                                             "https://site.example/news/b.html",
                                             "https://other.example/x/c.html"]
    # Where the feed was really fetched from (after a redirect) wins over the listed URL,
    # and a Content-Location header over both (itself resolved against the location).
    assert _links(rss_doc, spec=spec, location="https://cdn.example/f/feed.xml")[0][1] == \
        "https://cdn.example/f/b.html"
    assert _links(rss_doc, {"content-location": "/moved/feed.xml"}, spec=spec)[0][1] == \
        "https://site.example/moved/b.html"
    atom = (b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" '
            b'xml:base="https://base.example/root/"><title>A</title>'
            b'<entry><id>1</id><title>x</title><link href="../p/x.html"/></entry>'
            b'<entry xml:base="sub/"><id>2</id><title>y</title><link href="y.html"/></entry>'
            b"</feed>")
    assert _links(atom, spec=spec)[0] == ["https://base.example/p/x.html",
                                          "https://base.example/root/sub/y.html"]
    rdf = (b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-'
           b'ns#" xmlns="http://purl.org/rss/1.0/"><channel><title>R</title></channel>'
           b"<item><title>r</title><link>r.html</link></item></rdf:RDF>")
    assert _links(rdf, spec=spec)[0] == ["https://site.example/news/r.html"]
    json_doc = json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": [
        {"id": "1", "url": "j.html"}, {"id": "2", "url": "/k.html"},
        {"id": "3", "url": "javascript:alert(1)"}]}).encode()
    urls, problems = _links(json_doc, {"content-type": "application/feed+json"}, spec=spec)
    assert urls == ["https://site.example/news/j.html", "https://site.example/k.html"]
    assert [p[1] for p in problems] == ["unsupported_scheme"]


def test_forbidden_character_references_cost_one_character_not_the_feed():
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>T &#xD800;</title>'
            b"<item><title>a &#xD800; b &#0; c &#x110000; d &#99999999999999999999; "
            b"e &#x1F600;</title><link>https://a.example/1</link></item>"
            b"<item><title>fine</title><link>https://a.example/2</link></item>"
            b"</channel></rss>")
    parsed = parse_feed(body, {}, SPEC, NOW)
    assert [e.url for e in parsed.entries] == ["https://a.example/1", "https://a.example/2"]
    assert parsed.entries[0].title == "a \ufffd b \ufffd c \ufffd d \ufffd e \U0001f600"
    assert parsed.title == "T \ufffd"


def test_bad_entries_get_their_own_reasons_and_fields_are_bounded():
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
            b"<language>a very long free-text language</language>"
            b"<item><title>no link</title></item>"
            b"<item><title>port</title><link>http://a.example:99999/x</link></item>"
            b"<item><title>mail</title><link>mailto:desk@a.example</link></item>"
            b"<item><title>" + b"long " * 1000 + b"</title><guid>" + b"g" * 5000 +
            b"</guid><link>https://a.example/ok</link></item></channel></rss>")
    parsed = parse_feed(body, {}, SPEC, NOW)
    assert [(p[0], p[1]) for p in parsed.problems] == [
        (f"{SPEC.url}#entry[0]", "missing_link"), ("http://a.example:99999/x", "bad_url"),
        ("mailto:desk@a.example", "unsupported_scheme")]
    (entry,) = parsed.entries
    assert len(entry.title) == 1000 and entry.guid.startswith("nb:") and len(entry.guid) == 19
    assert entry.language_hint is None


def test_a_feed_the_parser_cannot_read_is_one_malformed_feed():
    parsed = parse_feed(b"\x00\x01\x02\xff" * 64, {"content-type": "application/xml"}, SPEC,
                        NOW)
    assert not parsed.entries and parsed.bozo and parsed.reason == "malformed_feed"


def poll_once(url: str):
    """One poll of ``url`` as ``watch`` polls it (through the polite fetcher)."""
    from transforms.feeds.polling import FeedState, poll_feed
    from transforms.fetching.politeness import PoliteFetcher

    fetcher = PoliteFetcher(FetchPolicy(allow_private_network=True, max_attempts=1,
                                        respect_robots=False), threads=1)
    try:
        return poll_feed(fetcher, FeedSpec(url=url), FeedState(), NOW)
    finally:
        fetcher.close()


def test_watch_polling_survives_a_surrogate_feed(pages_server):
    url = pages_server.add("/feed.xml", b'<?xml version="1.0"?><rss version="2.0"><channel>'
                           b"<title>T</title><item><title>&#xD800;</title>"
                           b"<link>/p/1.html</link></item></channel></rss>",
                           "application/rss+xml")
    result = poll_once(url)
    assert result.status == "fetched" and not result.errors
    assert [e.url for e in result.entries] == [pages_server.base_url + "/p/1.html"]


def test_resolving_links_leaves_charset_detection_alone():
    # No headers and no declared encoding: UTF-8, as feedparser reads it without headers.
    body = ('<rss version="2.0"><channel><title>Café</title><item><title>Crème</title>'
            "<link>/p/a.html</link></item></channel></rss>").encode()
    parsed = parse_feed(body, {}, FeedSpec(url="https://site.example/feed"), NOW)
    assert parsed.title == "Café" and parsed.entries[0].title == "Crème"
    assert parsed.entries[0].url == "https://site.example/p/a.html"
    assert not parsed.bozo


def test_relative_links_resolve_against_where_a_redirected_feed_was_fetched(pages_server):
    pages_server.add("/news/feed.xml", b'<?xml version="1.0"?><rss version="2.0"><channel>'
                     b"<title>T</title><item><title>A</title><link>a.html</link></item>"
                     b"</channel></rss>", "application/rss+xml")
    old = pages_server.add("/old-feed", b"", "text/plain", status=301,
                           headers={"Location": "/news/feed.xml"})
    result = poll_once(old)
    assert [e.url for e in result.entries] == [pages_server.base_url + "/news/a.html"]
