"""Generated hostile input at every parser: nothing raises, and what comes out is either a
valid record or an error record with a known reason, and converts to Arrow and Parquet.

Hypothesis generates the cases with ``derandomize=True``: the same cases on every run.
The number of cases per parser is the ``hostile_settings(N)`` of each test.
"""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import Article, Entry, ErrorRecord, FeedSpec
from tests.hostile import (
    NOW,
    ODD_DATES,
    ODD_LINKS,
    SPECIAL_CHARS,
    assert_storable,
    feed_items,
    hostile_chars,
    hostile_settings,
    hostile_text,
    render_feed,
)
from transforms.extraction.extract import Extracted, build_article, extract_page
from transforms.extraction.language import detect_language
from transforms.extraction.text import has_unstorable
from transforms.feeds.backfill import BackfillError, decode_line, line_preview, parse_backfill_line
from transforms.feeds.parse import parse_feed
from transforms.feeds.sources import read_sources
from transforms.fetching.urls import canonical_url, is_http_url
from transforms.util import error_record

ENTRY_REASONS = {"missing_link", "unsupported_scheme", "bad_url", "bad_entry"}
FEED_REASONS = {"malformed_feed", "unsafe_xml", "too_large"}
BACKFILL_REASONS = {"invalid_utf8", "invalid_json", "too_large", "missing_url", "missing_text",
                    "wrong_type", "bad_url", "bad_date"}
SPEC = FeedSpec(url="https://feeds.example/news/rss.xml")
_LANG = re.compile(r"[a-z]{2,3}")


def _articles_and_errors(parsed) -> list:
    """What the pipeline would build from a parsed feed: articles and error records."""
    out: list = []
    for entry in parsed.entries:
        article = build_article(entry, Extracted("", "", (), None, ()), NOW)
        if article is not None:
            out.append(article)
    for url, reason, message in parsed.problems:
        out.append(error_record(url, SPEC.url, "entry", "parse_feed", reason, message, None,
                                1, NOW))
    if parsed.bozo and not parsed.entries:
        out.append(error_record(SPEC.url, SPEC.url, "feed", "parse_feed", parsed.reason,
                                parsed.bozo, 200, 1, NOW))
    return out


def _check_entry(entry: Entry) -> None:
    assert isinstance(entry, Entry)
    assert is_http_url(entry.url) and not has_unstorable(entry.url)
    for text in (entry.title, entry.summary, entry.content, entry.guid, entry.source,
                 *entry.authors, *entry.categories):
        assert isinstance(text, str) and not has_unstorable(text)
    assert len(entry.title) <= 1000
    assert entry.language_hint is None or _LANG.fullmatch(entry.language_hint)
    if entry.published_at is not None:
        assert entry.published_at.tzinfo is not None


@hostile_settings(160)
@given(kind=st.sampled_from(["rss", "atom", "rdf", "json"]), items=feed_items(),
       refs=st.booleans(), base=st.sampled_from([None, "https://base.example/dir/", "rel/",
                                                 "javascript:x"]),
       mangle=st.sampled_from(["none", "truncate", "nul", "garbage", "bom"]))
def test_feed_parsing_never_raises(kind, items, refs, base, mangle):
    body = render_feed(kind, items, refs, base)
    if mangle == "truncate":
        body = body[: len(body) * 2 // 3]
    elif mangle == "nul":
        body = body.replace(b"<title>", b"<title>\x00", 1)
    elif mangle == "garbage":
        body = body.replace(b"</title>", b"\xff\xfe\xc3(</title>", 1)
    elif mangle == "bom":
        body = b"\xef\xbb\xbf" + body
    parsed = parse_feed(body, {}, SPEC, NOW)
    for entry in parsed.entries:
        _check_entry(entry)
    assert all(reason in ENTRY_REASONS for _, reason, _ in parsed.problems)
    assert parsed.reason in FEED_REASONS
    if mangle == "none":
        # A whole document: every item is an entry or an entry-level problem, whatever
        # its fields hold (forbidden character references included).
        assert len(parsed.entries) + len(parsed.problems) == len(items)
    assert_storable(_articles_and_errors(parsed))


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), hostile_text,
              st.sampled_from(ODD_LINKS), st.sampled_from(ODD_DATES)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["name", "url", "x"]), inner,
                                            max_size=3)),
    max_leaves=6)
_ITEM_KEYS = ["id", "url", "external_url", "title", "content_html", "content_text", "summary",
              "date_published", "date_modified", "authors", "author", "tags", "language"]


@hostile_settings(150)
@given(top=st.dictionaries(st.sampled_from(["title", "language", "authors", "author",
                                            "home_page_url"]), _json_values, max_size=4),
       items=st.one_of(_json_values, st.lists(st.one_of(
           st.dictionaries(st.sampled_from(_ITEM_KEYS), _json_values, max_size=8),
           _json_values), max_size=5)))
def test_json_feeds_with_wrong_types_never_raise(top, items):
    doc = {**top, "version": "https://jsonfeed.org/version/1.1", "items": items}
    body = json.dumps(doc).encode()
    parsed = parse_feed(body, {"content-type": "application/feed+json"}, SPEC, NOW)
    for entry in parsed.entries:
        _check_entry(entry)
    if isinstance(items, list):
        # Every item, object or not, is an entry or a problem.
        assert len(parsed.entries) + len(parsed.problems) == len(items)
    else:
        assert parsed.reason == "malformed_feed" and parsed.bozo
    assert_storable(_articles_and_errors(parsed))


@pytest.mark.parametrize("body, content_type", [
    (b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item><title>x'
     b"</title><link>https://a.example/1</link><description>" + b"<div>" * 50_000 +
     b"deep" + b"</div>" * 50_000 + b"</description></item></channel></rss>",
     "application/rss+xml"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel>' + b"<x>" * 50_000,
     "application/rss+xml"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}", "application/feed+json"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"url": ' + b"9" * 5000
     + b"}]}", "application/feed+json"),
])
def test_deeply_nested_feeds_never_raise(body, content_type):
    parsed = parse_feed(body, {"content-type": content_type}, SPEC, NOW)
    for entry in parsed.entries:
        _check_entry(entry)
    assert parsed.entries or (parsed.bozo and parsed.reason == "malformed_feed")
    assert_storable(_articles_and_errors(parsed))


@hostile_settings(60)
@given(title=st.sampled_from(["ok &#xD800; still ok", "&#0;&#x110000;&#99999999999999999999;",
                              "&#xDFFF&#xD800;x"]),
       link=st.sampled_from(["/p/a.html", "p/a.html", "https://other.example/x"]))
def test_rss_with_forbidden_char_refs_keeps_its_items(title, link):
    body = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
            f"<item><title>{title}</title><link>{link}</link></item>"
            f"<item><title>second</title><link>/p/second.html</link></item>"
            f"</channel></rss>").encode()
    parsed = parse_feed(body, {}, SPEC, NOW)
    assert [e.url for e in parsed.entries][1] == "https://feeds.example/p/second.html"
    assert len(parsed.entries) == 2 and not parsed.problems
    assert "\ufffd" in parsed.entries[0].title or "&#" in parsed.entries[0].title


@hostile_settings(400)
@given(line=st.one_of(
    st.binary(max_size=200),
    st.text(hostile_chars, max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda obj: json.dumps(obj).encode(),
              st.recursive(st.one_of(st.none(), st.booleans(), st.integers(),
                                     st.floats(allow_nan=True), hostile_text),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=5), inner,
                                                                   max_size=3)),
                           max_leaves=8)),
    st.builds(lambda url, text, title, published, source, language: json.dumps({
        "url": url, "text": text, "title": title, "published": published, "source": source,
        "language": language}).encode(),
        st.one_of(st.sampled_from(ODD_LINKS), st.just("https://a.example/x"), st.integers()),
        st.one_of(hostile_text, st.just("Body."), st.lists(st.integers(), max_size=2)),
        st.one_of(st.none(), hostile_text, st.integers(), st.dictionaries(st.text(), st.none())),
        st.one_of(st.none(), st.sampled_from(ODD_DATES), st.floats(), st.booleans()),
        st.one_of(st.none(), hostile_text, st.lists(st.text(), max_size=2)),
        st.one_of(st.none(), st.sampled_from(["en", "EN-gb", "english", "", "\ud800", "x" * 90]),
                  st.integers())),
    st.sampled_from([b"[" * 100_000 + b"]" * 100_000, b'{"url": ' + b"9" * 5000 + b"}",
                     b'{"url": "https://a.example/", "text": "' + b"x" * 1_000_001 + b'"}',
                     b'\xef\xbb\xbf{"url": "https://a.example/b", "text": "BOM first"}',
                     b'{"url": "https://a.example/c", "text": "\\ud800\\u0000 repaired"}',
                     b'{"url": "https://a.example/c", "text": "x", "title": 5}'])))
def test_backfill_lines_never_raise(line):
    try:
        entry = parse_backfill_line(line, NOW)
    except BackfillError as e:
        assert e.reason in BACKFILL_REASONS and str(e)
        record = error_record(f"in.jsonl: {line_preview(line)}", "", "entry", "read_backfill",
                              e.reason, str(e), None, 1, NOW)
        assert_storable([record])
        return
    _check_entry(entry)
    assert entry.body and not has_unstorable(entry.body)
    assert_storable([build_article(entry, None, NOW)])


def test_backfill_field_rules():
    ok = parse_backfill_line(b'{"url": "https://a.example/c", "text": "a\\ud800b\\u0000c",'
                             b' "title": "t\\udc00", "language": "english"}', NOW)
    assert (ok.body, ok.title, ok.language_hint) == ("a\ufffdbc", "t\ufffd", None)
    emoji = parse_backfill_line(b'{"url": "https://a.example/e", "text": "\\ud83d\\ude00"}', NOW)
    assert emoji.body == "\U0001f600"  # a valid escaped pair is joined, not replaced
    cases = {b'{"url": "https://a.example/", "text": "x", "title": 5}': "wrong_type",
             b'{"url": "https://a.example/", "text": "x", "source": ["a"]}': "wrong_type",
             b'{"url": "https://a.example/", "text": "x", "published": 1700000000}': "wrong_type",
             b'{"url": "https://a.example/\\ud800", "text": "x"}': "bad_url",
             b'{"url": "https://a.example/", "text": "caf\xe9"}': "invalid_utf8",
             b"[" * 50_000: "invalid_json",
             b'{"url": "https://a.example/", "text": "' + b"x" * 1_000_001 + b'"}': "too_large"}
    for line, reason in cases.items():
        with pytest.raises(BackfillError) as info:
            parse_backfill_line(line, NOW)
        assert info.value.reason == reason, line[:80]
    assert decode_line(b"\xef\xbb\xbf{}") == "{}"


@hostile_settings(120)
@given(suffix=st.sampled_from([".txt", ".opml", ".xml", ".yaml", ".yml", ""]),
       content=st.one_of(
           st.binary(max_size=300),
           st.text(hostile_chars, max_size=300).map(lambda s: s.encode("utf-8",
                                                                       "surrogatepass")),
           st.lists(st.one_of(st.sampled_from(ODD_LINKS), st.text(hostile_chars, max_size=30)),
                    max_size=6).map(lambda xs: "\n".join(xs).encode("utf-8", "surrogatepass")),
           st.lists(st.one_of(st.sampled_from(ODD_LINKS), hostile_text), max_size=4).map(
               lambda xs: ("<?xml version='1.0'?><opml version='2.0'><body>" + "".join(
                   f"<outline xmlUrl={json.dumps(x)} text='x'/>" for x in xs)
                   + "</body></opml>").encode("utf-8", "surrogatepass")),
           st.lists(st.one_of(st.sampled_from(ODD_LINKS), st.integers(),
                              st.dictionaries(st.sampled_from(["url", "name", "topic",
                                                               "language", "x"]),
                                              st.one_of(st.sampled_from(ODD_LINKS),
                                                        st.integers(), st.none()))),
                    max_size=4).map(lambda xs: json.dumps({"feeds": xs}).encode()),
           st.sampled_from([b"a: &a [*a, *a]\nfeeds: *a", b"feeds: " + b"[" * 5000,
                            b"feeds:\n  - !!python/object/apply:os.system ['true']",
                            b"<!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><opml>&a;"
                            b"</opml>", b"\xff\xfe<\x00o\x00"])))
def test_source_lists_never_raise(tmp_path_factory, suffix, content):
    path = tmp_path_factory.mktemp("src") / f"feeds{suffix}"
    path.write_bytes(content)
    subs = read_sources([str(path)])
    for spec in subs.feeds:
        assert is_http_url(spec.url) and not has_unstorable(spec.url)
        assert spec.name is None or isinstance(spec.name, str)
    for where, message in subs.problems:
        assert isinstance(where, str) and message and "\n" not in message
    assert_storable([error_record(where, "", "feed", "read_sources", "bad_source", message,
                                  None, 0, NOW) for where, message in subs.problems])


@hostile_settings(500)
@given(url=st.one_of(st.sampled_from(ODD_LINKS), st.text(hostile_chars, max_size=80),
                     st.builds(lambda host, path, query: f"https://{host}/{path}?{query}",
                               st.text(string.ascii_letters + ".-[]:@%", min_size=1,
                                       max_size=20),
                               st.text(hostile_chars, max_size=30),
                               st.text(hostile_chars, max_size=30))))
def test_url_canonicalisation_never_raises(url):
    try:
        canonical = canonical_url(url)
    except ValueError:
        assert not is_http_url(url)
        return
    assert is_http_url(canonical)
    assert canonical.split(":", 1)[0] in ("http", "https")
    assert "#" not in canonical


# A tiny HTML grammar: nesting (deep, unbalanced), attributes, scripts, hostile text.
_TAGS = ["p", "div", "article", "span", "script", "style", "table", "td", "h1", "a", "br",
         "main", "header", "li"]


@st.composite
def html_documents(draw) -> str:
    depth = draw(st.sampled_from([1, 5, 40, 600]))
    tag = draw(st.sampled_from(_TAGS))
    text = draw(hostile_text)
    meta = draw(st.sampled_from([
        "", '<meta name="author" content="\x00A\ud800">',
        '<script type="application/ld+json">{"@type": "NewsArticle", "author": '
        '{"name": 5}, "datePublished": "99999-99-99", "headline": ["a", 1]}</script>',
        '<meta property="article:published_time" content="0001-01-01T00:00:00+14:00">',
        '<meta name="keywords" content="' + "k," * 2000 + '">']))
    closing = draw(st.booleans())
    return (f"<html><head><title>{draw(hostile_text)[:500]}</title>{meta}</head><body>"
            + f"<{tag}>" * depth + text + (f"</{tag}>" * depth if closing else "")
            + "</body></html>")


@hostile_settings(80)
@given(html=st.one_of(html_documents(), st.text(hostile_chars, max_size=300),
                      st.just(""), st.just("<" * 5000)))
def test_extraction_never_raises(html):
    ex = extract_page(html, "https://a.example/p")
    assert isinstance(ex, Extracted)
    for text in (ex.body, ex.title, *ex.authors, *ex.categories):
        assert isinstance(text, str) and not has_unstorable(text)
    entry = Entry(entry_id="0" * 16, url="https://a.example/p", link="https://a.example/p",
                  guid="g", feed_url=SPEC.url, source="s", title="t", summary="", content="",
                  published_at=None, authors=(), categories=(), language_hint=None,
                  topic_hint=None, fetched_at=NOW)
    article = build_article(entry, ex, NOW)
    if article is not None:
        assert_storable([article])


@hostile_settings(200)
@given(text=st.one_of(hostile_text, st.text(max_size=400)),
       hint=st.one_of(st.none(), st.sampled_from(["en", "de-AT", "", "und", "x" * 500,
                                                  "\ud800", "EN", "123"])))
def test_language_detection_never_raises(text, hint):
    lang, probability = detect_language(text, hint)
    assert lang == "und" or _LANG.fullmatch(lang)
    assert probability is None or 0.0 <= probability <= 1.0


_TEXT_FIELDS = ("url", "feed_url", "source", "title", "body", "story_id")


@hostile_settings(200)
@given(values=st.fixed_dictionaries({name: hostile_text for name in _TEXT_FIELDS}),
       authors=st.lists(hostile_text, max_size=3), message=hostile_text,
       published=st.sampled_from([None, NOW]))
def test_records_always_convert_to_arrow(values, authors, message, published):
    article = Article(
        article_id="0123456789abcdef", url=values["url"], feed_url=values["feed_url"],
        source=values["source"], title=values["title"], body=values["body"],
        body_source="page", authors=authors, published_at=published, fetched_at=NOW,
        language="und", language_confidence=None, topic="unclassified", topic_code=None,
        topic_source="none", categories=list(SPECIAL_CHARS), content_hash="0" * 16,
        story_id=values["story_id"], is_story_lead=True, story_similarity=None,
        date="2024-11-24", schema_version=1)
    error = error_record(values["url"], values["feed_url"], "entry", "extract", "empty_body",
                         message, None, 1, NOW)
    assert isinstance(error, ErrorRecord)
    for record in (article, error):
        for name in ("url", "feed_url"):
            assert not has_unstorable(getattr(record, name))
    assert not any(has_unstorable(a) for a in article.authors + article.categories)
    assert_storable([article, error])
