"""Hostile inputs shared by the hostile-input tests: strategies and a fixed corpus.

Nothing here is random at run time: the Hypothesis tests run with ``derandomize=True``,
so the same cases are generated on every machine and every run.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from html import escape

import pyarrow.parquet as pq
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from schemas import ARTICLE_SCHEMA, ERROR_SCHEMA
from transforms.sinks.parquet import to_rows

NOW = dt.datetime(2024, 11, 24, 12, tzinfo=dt.UTC)


def hostile_settings(examples: int):
    """Deterministic Hypothesis settings: fixed cases, no deadline, no example database."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# Characters that broke something somewhere: lone surrogates (both halves), NUL and other
# C0 controls, non-characters, the last code point, bidi overrides, a BOM, line and
# paragraph separators, combining marks without a base.
SPECIAL_CHARS = ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\x01", "\x08", "\x0b",
                 "\x1b", "\x7f", "\x85", "\ufffe", "\uffff", "\U0010ffff", "\u202e", "\ufeff",
                 "\u2028", "\u2029", "\u0301", "\r", "\t", "&", "<", ">", '"', "'", "%"]
hostile_chars = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS))
hostile_text = st.one_of(
    st.text(hostile_chars, max_size=60),
    # Giant fields, built cheaply by repetition.
    st.builds(lambda piece, n: piece * n, st.text(hostile_chars, min_size=1, max_size=4),
              st.integers(1_000, 60_000)),
)

# Character references that XML forbids or that are out of range.
BAD_CHARREFS = ["&#xD800;", "&#xDFFF;", "&#55296;", "&#0;", "&#x0;", "&#1;", "&#xFFFE;",
                "&#x110000;", "&#99999999999999999999;", "&#x00000000000000041;", "&#xD800",
                "&#x1F600;", "&#128512;"]

ODD_DATES = ["Mon, 32 Foo 99999 25:61:61 +9999", "0001-01-01T00:00:00+14:00",
             "9999-12-31T23:59:59-14:00", "10000-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
             "2024-13-45T99:99:99Z", "2024/05/06 12:00", "-1", "1e309", "", "   ",
             "Tue, 19 Nov 2024 10:00:00 CEST", "2024-11-23T10:00:00.123456789+05:45",
             "понедельник, 18 ноября 2024", "2024-11-23T10:00:00Z\x00", "Thu, 01 Jan 1970",
             "Sat, 23 Nov 2024 10:00:00 GMT"]

ODD_LINKS = ["/p/a.html", "p/b.html", "../up.html", "//other.example/x", "?q=1", "#frag",
             "javascript:alert(1)", "mailto:a@b.example", "data:text/html,hi", "ftp://a/x",
             "http://[::1", "http://a.example/\x00", "http://a.example/\ud800",
             "http://a.example/p?utm_source=x&b=2&a=1#frag", "HTTP://A.EXAMPLE:80/Path",
             "  http://a.example/space  ", "http://user:pw@a.example/", "http://a.example:99999/",
             "http://-/", "http://пример.рф/путь", "https://a.example/" + "a" * 5000,
             "http:///nohost", "http://a.example/%zz", "", " "]


def xml_text(value: str) -> str:
    """``value`` escaped for XML element content (still holding what XML forbids)."""
    return escape(value, quote=False)


@st.composite
def feed_items(draw, max_items: int = 4) -> list[dict[str, str]]:
    """Items for a feed: each field hostile, odd or plain."""
    items = []
    for _ in range(draw(st.integers(0, max_items))):
        items.append({
            "title": draw(st.one_of(hostile_text, st.sampled_from(BAD_CHARREFS),
                                    st.just("Plain title"))),
            "link": draw(st.one_of(st.sampled_from(ODD_LINKS), st.text(hostile_chars,
                                                                       max_size=30),
                                   st.just("https://news.example/story"))),
            "date": draw(st.one_of(st.sampled_from(ODD_DATES), st.text(hostile_chars,
                                                                       max_size=20))),
            "guid": draw(st.one_of(st.text(hostile_chars, max_size=20), st.just("g" * 3000))),
            "text": draw(hostile_text),
            "category": draw(st.text(hostile_chars, max_size=20)),
        })
    return items


def _charrefs(value: str, refs: bool) -> str:
    """Escaped text, or (with ``refs``) every non-ASCII character as a numeric reference,
    which is how a lone surrogate reaches a feed (``&#xD800;``)."""
    if not refs:
        return xml_text(value)
    return "".join(c if c.isascii() and c not in "&<>" else f"&#x{ord(c):X};" for c in value)


def render_feed(kind: str, items: list[dict[str, str]], refs: bool, base: str | None) -> bytes:
    """One feed document of ``kind`` (rss, atom, rdf, json) holding ``items``."""
    def t(value: str) -> str:
        return _charrefs(value, refs)

    if kind == "json":
        doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Hostile JSON",
               "items": [{"id": it["guid"], "url": it["link"], "title": it["title"],
                          "content_html": it["text"], "date_published": it["date"],
                          "tags": [it["category"]]} for it in items]}
        return json.dumps(doc).encode("utf-8")  # ensure_ascii: surrogates as \\ud800
    base_attr = f' xml:base="{xml_text(base)}"' if base else ""
    if kind == "atom":
        entries = "".join(
            f"<entry><title>{t(it['title'])}</title><link href=\"{t(it['link'])}\"/>"
            f"<id>{t(it['guid'])}</id><updated>{t(it['date'])}</updated>"
            f"<summary>{t(it['text'])}</summary><category term=\"{t(it['category'])}\"/>"
            f"</entry>" for it in items)
        return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"'
                f"{base_attr}><title>Hostile Atom</title>{entries}</feed>"
                ).encode("utf-8", "surrogatepass")
    if kind == "rdf":
        entries = "".join(
            f"<item><title>{t(it['title'])}</title><link>{t(it['link'])}</link>"
            f"<dc:date>{t(it['date'])}</dc:date><description>{t(it['text'])}</description>"
            f"</item>" for it in items)
        return ('<?xml version="1.0" encoding="utf-8"?><rdf:RDF '
                'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
                'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
                f"{base_attr}><channel><title>Hostile RDF</title></channel>{entries}</rdf:RDF>"
                ).encode("utf-8", "surrogatepass")
    entries = "".join(
        f"<item><title>{t(it['title'])}</title><link>{t(it['link'])}</link>"
        f"<guid>{t(it['guid'])}</guid><pubDate>{t(it['date'])}</pubDate>"
        f"<description>{t(it['text'])}</description><category>{t(it['category'])}</category>"
        f"</item>" for it in items)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"{base_attr}><channel>'
            f"<title>Hostile RSS</title>{entries}</channel></rss>"
            ).encode("utf-8", "surrogatepass")


def parquet_round_trip(records: list, schema) -> list[dict]:
    """Records → Arrow → Parquet bytes → rows, as the sinks write them."""
    table = to_rows(records, schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return pq.read_table(io.BytesIO(sink.getvalue())).to_pylist()


def assert_storable(records: list) -> None:
    """Every record converts to Arrow and survives a Parquet round trip unchanged."""
    from schemas import Article, ErrorRecord

    for schema, kind in ((ARTICLE_SCHEMA, Article), (ERROR_SCHEMA, ErrorRecord)):
        chosen = [r for r in records if isinstance(r, kind)]
        if not chosen:
            continue
        rows = parquet_round_trip(chosen, schema)
        assert len(rows) == len(chosen)
        for row, record in zip(rows, chosen, strict=True):
            for name in ("url", "title", "body", "message"):
                if name in row:
                    assert row[name] == getattr(record, name)
