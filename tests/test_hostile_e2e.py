"""End to end: a hostile feed corpus and a hostile backfill file through the real CLI.

A loopback server serves feeds with lone-surrogate character references, relative links,
``xml:base``, broken XML, NUL bytes, a giant title, odd dates and bad links, in RSS,
Atom, RDF and JSON Feed; a backfill file carries invalid UTF-8, escaped surrogates,
wrong JSON types, absurd nesting and an oversized text. The run must exit 0, account
for every entry from the Parquet it wrote, write every good article and give each bad
entry exactly one error record with the right reason.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.cli import main
from tests.conftest import article_html
from transforms.fetching.urls import canonical_url

pytestmark = pytest.mark.slow

# Distinct subjects, so that no two good pages are near copies of each other.
SUBJECTS = [
    ("harbour", "The harbour authority opened a new container terminal on the east quay"),
    ("orchard", "Apple growers in the valley reported an early harvest after a warm spring"),
    ("library", "The city library extended its opening hours and added a repair cafe"),
    ("glacier", "Researchers measured the retreat of the glacier with drones and radar"),
    ("chess", "A fourteen-year-old won the national chess championship in the final round"),
    ("bridge", "Engineers closed the old rail bridge for inspection after cracks appeared"),
    ("bakery", "A family bakery celebrated its centenary with free bread for neighbours"),
    ("comet", "Amateur astronomers photographed the comet low above the western horizon"),
    ("tram", "The new tram line to the university carried twenty thousand riders a day"),
    ("vineyard", "Hail damaged a third of the vineyards along the river slopes last week"),
    ("museum", "The maritime museum returned a carved figurehead to its home island"),
    ("marathon", "Heat forced organisers to move the marathon start to six in the morning"),
    ("forest", "Volunteers planted ten thousand oak saplings on the burned hillside"),
    ("theatre", "The puppet theatre reopened after a two-year renovation of its stage"),
]


_WORDS = ("council river market school winter station doctor garden village ministry "
          "festival harvest engine island painter stadium factory network budget museum "
          "airport bakery canal choir desert harbour ledger mountain orchestra pension "
          "quarry satellite tunnel vaccine workshop archive ballot cathedral dialect "
          "ferry granite hospital journal kitchen lantern meadow notebook parish ribbon "
          "saddle timber uniform volcano warehouse yacht zoning anchor blossom compass").split()


def _page_text(subject: str, lead: str) -> list[str]:
    """The lead and two paragraphs of words drawn for this subject alone (seeded by its
    name), so that no two pages share enough word pairs to look like copies."""
    rng = random.Random(subject)
    return [f"{lead}."] + [" ".join(rng.choice(_WORDS) for _ in range(40)).capitalize() + "."
                           for _ in range(2)]


def _serve_pages(server) -> dict[str, str]:
    """One page per subject at /p/<subject>.html; returns subject → absolute URL."""
    urls = {}
    for subject, lead in SUBJECTS:
        urls[subject] = server.add(f"/p/{subject}.html",
                                   article_html(lead, _page_text(subject, lead)))
    return urls


def _rss(items: str, extra: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"{extra}><channel>'
            f"<title>Hostile</title>{items}</channel></rss>").encode()


def _build_corpus(server, tmp: Path) -> tuple[Path, dict, dict]:
    """Serves the feeds, writes the feeds list; returns (list, expected, feed_errors).

    ``expected`` maps an entry's identity (canonical URL, or the location an error names)
    to ``"article"`` or the reason of its single error record.
    """
    pages = _serve_pages(server)
    page = {k: canonical_url(v) for k, v in pages.items()}
    expected: dict[str, str] = {}
    feed_errors: dict[str, str] = {}
    feeds = []

    def feed(path: str, body: bytes, ctype: str = "application/rss+xml") -> str:
        url = server.add(path, body, ctype)
        feeds.append(url)
        return url

    # 1. A lone-surrogate reference in a title (used to crash the whole run).
    feed("/f/surrogate.xml", _rss(
        f"<item><title>Bad &#xD800; title &#0; &#x110000;</title><link>{pages['harbour']}"
        f"</link></item><item><title>Fine</title><link>{pages['orchard']}</link></item>"))
    expected[page["harbour"]] = expected[page["orchard"]] = "article"
    # 2. Relative links: against the feed's URL, and against xml:base (channel and item).
    feed("/f/news/relative.xml", _rss(
        "<item><title>Root-relative</title><link>/p/library.html</link></item>"
        "<item><title>Dot-relative</title><link>../../p/glacier.html</link></item>"))
    feed("/f/base.xml", _rss(
        '<item xml:base="/p/"><title>Item base</title><link>chess.html</link></item>',
        extra=f' xml:base="{server.base_url}/p/"'))
    expected[page["library"]] = expected[page["glacier"]] = expected[page["chess"]] = "article"
    # 3. Atom with xml:base on the feed and odd dates (year 1 with +14:00, month 13).
    feed("/f/atom.xml", (
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
        b'xml:base="/p/"><title>Atom</title>'
        b"<entry><title>Odd date</title><link href=\"bridge.html\"/><id>urn:x:1</id>"
        b"<updated>0001-01-01T00:00:00+14:00</updated></entry>"
        b"<entry><title>Worse date</title><link href=\"bakery.html\"/><id>urn:x:2</id>"
        b"<updated>2024-13-45T99:99:99Z</updated></entry></feed>"),
        "application/atom+xml")
    expected[page["bridge"]] = expected[page["bakery"]] = "article"
    # 4. RDF with a NUL byte in a title and a giant title.
    feed("/f/rdf.xml", (
        '<?xml version="1.0" encoding="utf-8"?><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns="http://purl.org/rss/1.0/"><channel><title>RDF</title></channel>'
        f"<item><title>Nul \x00 here</title><link>{pages['comet']}</link></item>"
        f"<item><title>{'Giant ' * 40_000}</title><link>{pages['tram']}</link></item>"
        "</rdf:RDF>").encode())
    expected[page["comet"]] = expected[page["tram"]] = "article"
    # 5. JSON Feed: a relative URL, an escaped lone surrogate, a bad scheme, no URL,
    #    a port out of range, fields of the wrong type, an item that is not an object.
    json_url = feed("/f/json/feed.json", json.dumps({
        "version": "https://jsonfeed.org/version/1.1", "title": "JSON \ud800",
        "items": [
            {"id": "1", "url": "../../p/vineyard.html", "title": "Relative \ud800",
             "tags": "not-a-list", "authors": {"name": 5}},
            {"id": "2", "url": "javascript:alert(1)", "title": "Script"},
            {"id": "3", "title": "No URL at all"},
            {"id": "4", "url": "http://a.example:99999/x", "title": "Bad port"},
            {"id": 5.5, "url": pages["museum"], "date_published": "9999-12-31T23:59:59-14:00"},
            ["an", "array", "is", "not", "an", "item"],
        ]}).encode("utf-8"), "application/feed+json")
    expected[page["vineyard"]] = expected[page["museum"]] = "article"
    expected["javascript:alert(1)"] = "unsupported_scheme"
    expected[f"{json_url}#entry[2]"] = "missing_link"
    expected["http://a.example:99999/x"] = "bad_url"
    expected[f"{json_url}#entry[5]"] = "bad_entry"
    # 6. Whole feeds that are not feeds: garbage, and binary with NULs.
    garbage = feed("/f/garbage.xml", b"this is { not <a feed", "text/xml")
    binary = feed("/f/binary.xml", b"\x00\x01\x02\xff" * 64, "application/xml")
    feed_errors[garbage] = feed_errors[binary] = "malformed_feed"
    # 7. A feed whose link is dead and a broken source file beside the good list.
    expected[canonical_url(server.base_url + "/p/gone.html")] = "http_404"
    feed("/f/dead.xml", _rss("<item><title>Gone</title><link>/p/gone.html</link></item>"))
    listing = tmp / "feeds.txt"
    listing.write_text("\n".join(feeds) + "\nnot-a-url\n", encoding="utf-8")
    return listing, expected, feed_errors


def _backfill(tmp: Path) -> tuple[Path, dict]:
    """A hostile backfill file; returns (path, first characters of line → outcome)."""
    forest, theatre = ("\n\n".join(_page_text(s, lead)) for s, lead in SUBJECTS[-2:])
    lines: list[tuple[bytes, str]] = [
        (b"\xef\xbb\xbf" + json.dumps({"url": "https://bf.example/forest",
                                       "text": forest}).encode(), "article"),
        (json.dumps({"url": "https://bf.example/theatre", "title": "Lone \ud800",
                     "text": theatre + "\ud800\x00",
                     "published": "0001-01-01T00:00:00+14:00"}).encode(), "article"),
        (b'{"url": "https://bf.example/bad-utf8", "text": "caf\xe9 \xff"}', "invalid_utf8"),
        (json.dumps({"url": "https://bf.example/t", "text": "x", "title": 5}).encode(),
         "wrong_type"),
        (json.dumps({"url": "https://bf.example/s", "text": "x", "source": {"a": 1}}).encode(),
         "wrong_type"),
        (b"[" * 100_000, "invalid_json"),
        (json.dumps({"url": "https://bf.example/big", "text": "x" * 1_000_001}).encode(),
         "too_large"),
        (json.dumps({"url": "/relative", "text": "x"}).encode(), "bad_url"),
        (json.dumps({"url": "https://bf.example/\ud800", "text": "x"}).encode(), "bad_url"),
        (json.dumps({"url": "https://bf.example/d", "text": "x", "published": "soon"}).encode(),
         "bad_date"),
        (json.dumps({"text": "no url"}).encode(), "missing_url"),
        (b"not json", "invalid_json"),
    ]
    path = tmp / "backfill.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in lines) + b"\n\n")
    return path, {line[3:40].decode("utf-8", "replace") if line.startswith(b"\xef")
                  else line[:37].decode("utf-8", "replace"): outcome
                  for line, outcome in lines}


def _table(out: Path, name: str) -> list[dict]:
    if not (out / name).exists():
        return []
    return ds.dataset(out / name, format="parquet", partitioning="hive").to_table().to_pylist()


def test_hostile_corpus_runs_to_the_end_and_accounts_for_every_entry(pages_server, tmp_path):
    listing, expected, feed_errors = _build_corpus(pages_server, tmp_path)
    backfill, backfill_expected = _backfill(tmp_path)
    broken = tmp_path / "broken.opml"
    broken.write_text("this is not XML")
    out = tmp_path / "out"
    code = main(["ingest", "--feeds", str(listing), "--feeds", str(broken), "--articles",
                 str(backfill), "--output", str(out), "--allow-private-network",
                 "--per-host-delay", "0", "--per-host-concurrency", "4",
                 "--story-similarity", "lexical", "--runner", "FnApiRunner"])
    assert code == 0

    articles, duplicates = _table(out, "articles"), _table(out, "duplicates")
    errors = _table(out, "errors")
    entry_errors = [e for e in errors if e["level"] == "entry"]
    entries = len(expected) + len(backfill_expected)
    # Accounting, from the files read back.
    assert len(articles) + len(duplicates) + len(entry_errors) == entries
    assert (entries, len(articles), len(entry_errors)) == (28, 13, 15)
    assert not duplicates
    written = {a["url"] for a in articles}
    feed_articles = {k for k, v in expected.items() if v == "article"}
    assert feed_articles <= written
    assert {"https://bf.example/forest", "https://bf.example/theatre"} <= written
    assert len(written) == len(articles) == len(feed_articles) + 2

    # Each bad feed entry: exactly one error record with the right reason.
    feed_entry_errors = [e for e in entry_errors if e["stage"] != "read_backfill"]
    by_url = {}
    for e in feed_entry_errors:
        assert e["url"] not in by_url, f"two error records for {e['url']}"
        by_url[e["url"]] = e["reason"]
    assert by_url == {k: v for k, v in expected.items() if v != "article"}
    # Each bad backfill line: one record whose location names the line's first characters.
    backfill_errors = [e for e in entry_errors if e["stage"] == "read_backfill"]
    assert len(backfill_errors) == sum(v != "article" for v in backfill_expected.values())
    for prefix, outcome in backfill_expected.items():
        if outcome == "article":
            continue
        found = [e for e in backfill_errors if prefix[:30] in e["url"]]
        assert [e["reason"] for e in found] == [outcome], prefix
    # Whole-feed failures and the unreadable source file are feed-level records.
    feed_level = {e["url"]: (e["stage"], e["reason"]) for e in errors if e["level"] == "feed"}
    for url, reason in feed_errors.items():
        assert feed_level[url] == ("parse_feed", reason)
    assert feed_level[str(broken)] == ("read_sources", "bad_source")
    bad_line = listing.read_text().splitlines().index("not-a-url") + 1
    assert feed_level[f"{listing}:{bad_line}"] == ("read_sources", "bad_source")

    # What was repaired, was repaired and stored.
    rows = {a["url"]: a for a in articles}
    theatre = rows["https://bf.example/theatre"]
    assert theatre["title"] == "Lone \ufffd" and theatre["published_at"] is None
    assert "\ufffd" in theatre["body"] and "\x00" not in theatre["body"]
    assert all(a["published_at"] is None for a in (rows[canonical_url(
        pages_server.base_url + p)] for p in ("/p/bridge.html", "/p/museum.html")))
    assert all(len(a["title"]) <= 1000 for a in articles)
