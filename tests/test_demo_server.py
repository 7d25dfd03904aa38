"""The demo corpus and its loopback server, exercised over real HTTP."""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import feedparser
import pytest
import yaml

from pipelines.demo import EXPECTED_JSON, FEEDS_OPML, FEEDS_TXT, FEEDS_YAML, SITE_DIR
from pipelines.demo.server import SiteServer

TIMEOUT = 10
HARBOR_FEED = "/harbor-ledger/feed.xml"


def fetch(url: str, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def raw_get(server: SiteServer, target: str) -> tuple[int, bytes]:
    """Sends ``target`` exactly as written (no client-side normalisation)."""
    connection = http.client.HTTPConnection(server.host, int(server.base_url.rsplit(":", 1)[1]),
                                            timeout=TIMEOUT)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def resolve(text: str, server: SiteServer) -> str:
    return text.replace("{{BASE}}", server.base_url)


@pytest.fixture(scope="module")
def running() -> SiteServer:
    with SiteServer() as server:
        yield server


@pytest.fixture
def server(running: SiteServer) -> SiteServer:
    running.reset()
    yield running
    running.reset()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(EXPECTED_JSON.read_text(encoding="utf-8"))


def yaml_feed_urls(server: SiteServer) -> list[str]:
    doc = yaml.safe_load(FEEDS_YAML.read_text(encoding="utf-8"))
    return [resolve(item["url"], server) for item in doc["feeds"]]


# -- the server ------------------------------------------------------------------------


def test_base_url_is_loopback_without_trailing_slash(server: SiteServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert not server.base_url.endswith("/")
    assert int(server.base_url.rsplit(":", 1)[1]) > 0
    assert server.url("feeds.yaml") == server.base_url + "/feeds.yaml"


def test_feed_is_served_with_base_substituted(server: SiteServer) -> None:
    status, headers, body = fetch(server.url(HARBOR_FEED))
    assert status == 200
    assert headers["Content-Type"] == "application/rss+xml; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["ETag"].startswith('"') and not headers["ETag"].startswith("W/")
    assert email.utils.parsedate_to_datetime(headers["Last-Modified"]) is not None
    text = body.decode("utf-8")
    assert "{{BASE}}" not in text
    assert f"{server.base_url}/harbor-ledger/2024/11/kursk-deadline.html" in text


@pytest.mark.parametrize(("path", "content_type"), [
    ("/northgate-times/feed.atom", "application/atom+xml; charset=utf-8"),
    ("/rheinblick/2024/11/kursk-frist-amtseinfuehrung.html", "text/html; charset=utf-8"),
    ("/expected.json", "application/feed+json"),
    ("/feeds.yaml", "text/plain; charset=utf-8"),
    ("/feeds.txt", "text/plain; charset=utf-8"),
])
def test_content_type_by_extension(server: SiteServer, path: str, content_type: str) -> None:
    status, headers, body = fetch(server.url(path))
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert b"{{BASE}}" not in body


def test_head_sends_headers_only(server: SiteServer) -> None:
    status, headers, body = fetch(server.url(HARBOR_FEED), method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) > 0


def test_if_none_match_gets_304(server: SiteServer) -> None:
    _, headers, _ = fetch(server.url(HARBOR_FEED))
    status, again, body = fetch(server.url(HARBOR_FEED), {"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    assert again["ETag"] == headers["ETag"]
    status, _, body = fetch(server.url(HARBOR_FEED), {"If-None-Match": '"something-else"'})
    assert status == 200 and body
    assert server.requests[-2:] == [("GET", HARBOR_FEED, 304, True),
                                    ("GET", HARBOR_FEED, 200, True)]


def test_if_modified_since_gets_304(server: SiteServer) -> None:
    _, headers, _ = fetch(server.url(HARBOR_FEED))
    status, _, _ = fetch(server.url(HARBOR_FEED), {"If-Modified-Since": headers["Last-Modified"]})
    assert status == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    status, _, body = fetch(server.url(HARBOR_FEED), {"If-Modified-Since": old})
    assert status == 200 and body


def test_gzip_when_accepted(server: SiteServer) -> None:
    _, plain_headers, plain = fetch(server.url(HARBOR_FEED))
    status, headers, body = fetch(server.url(HARBOR_FEED), {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body) < len(plain)
    assert gzip.decompress(body) == plain
    assert headers["ETag"] != plain_headers["ETag"]
    assert "Content-Encoding" not in plain_headers
    # Either representation's tag validates.
    status, _, _ = fetch(server.url(HARBOR_FEED),
                         {"Accept-Encoding": "gzip", "If-None-Match": plain_headers["ETag"]})
    assert status == 304


@pytest.mark.parametrize("target", [
    "/../server.py",
    "/../../pipelines/demo/server.py",
    "/%2e%2e/server.py",
    "/harbor-ledger/../../server.py",
    "/harbor-ledger/..%2f..%2fserver.py",
    "/%2e%2e%2f__init__.py",
    "/harbor-ledger/%00feed.xml",
])
def test_path_traversal_is_refused(server: SiteServer, target: str) -> None:
    status, body = raw_get(server, target)
    assert status == 404
    assert b"SiteServer" not in body and b"SITE_DIR" not in body


def test_unknown_path_is_404_with_html(server: SiteServer) -> None:
    status, headers, body = fetch(server.url("/no-such-outlet/feed.xml"))
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert b"Not Found" in body
    assert server.count("/no-such-outlet/feed.xml") == 1
    assert server.requests[-1] == ("GET", "/no-such-outlet/feed.xml", 404, False)


def test_directory_serves_index(server: SiteServer) -> None:
    status, _, body = fetch(server.url("/"))
    assert status == 200 and b"newsbeam demo site" in body


def test_overrides_force_a_response(server: SiteServer) -> None:
    server.overrides[HARBOR_FEED] = (503, {"Retry-After": "2"}, b"busy")
    status, headers, body = fetch(server.url(HARBOR_FEED))
    assert (status, headers["Retry-After"], body) == (503, "2", b"busy")
    del server.overrides[HARBOR_FEED]
    status, _, _ = fetch(server.url(HARBOR_FEED))
    assert status == 200
    server.overrides["/moved.xml"] = (301, {"Location": "{{BASE}}/harbor-ledger/feed.xml"}, b"")
    status, _, _ = fetch(server.url("/moved.xml"))  # urllib follows the redirect
    assert status == 200
    assert server.requests[-2:] == [("GET", "/moved.xml", 301, False),
                                    ("GET", HARBOR_FEED, 200, False)]
    assert server.count(HARBOR_FEED) == 3


def test_override_matches_path_with_query(server: SiteServer) -> None:
    server.overrides["/tallis-market-report/feed.xml"] = (500, {}, b"oops")
    status, _, body = fetch(server.url("/tallis-market-report/feed.xml?page=2"))
    assert (status, body) == (500, b"oops")
    assert server.count("/tallis-market-report/feed.xml") == 1


def test_set_file_replaces_content_between_polls(server: SiteServer) -> None:
    _, before, original = fetch(server.url(HARBOR_FEED))
    feed = ('<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            "<item><title>New</title><link>{{BASE}}/harbor-ledger/new.html</link></item>"
            "</channel></rss>")
    server.set_file(HARBOR_FEED, feed)
    status, after, body = fetch(server.url(HARBOR_FEED), {"If-None-Match": before["ETag"]})
    assert status == 200
    assert body.decode() == feed.replace("{{BASE}}", server.base_url)
    assert after["ETag"] != before["ETag"]
    assert (email.utils.parsedate_to_datetime(after["Last-Modified"])
            > email.utils.parsedate_to_datetime(before["Last-Modified"]))
    status, _, _ = fetch(server.url(HARBOR_FEED), {"If-Modified-Since": before["Last-Modified"]})
    assert status == 200
    server.set_file("/extra/page.html", "<p>{{BASE}}</p>")
    status, headers, body = fetch(server.url("/extra/page.html"))
    assert status == 200 and body == f"<p>{server.base_url}</p>".encode()
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    server.unset_file(HARBOR_FEED)
    assert fetch(server.url(HARBOR_FEED))[2] == original


def test_request_log_records_every_request(server: SiteServer) -> None:
    for _ in range(3):
        fetch(server.url("/feeds.txt"))
    fetch(server.url("/feeds.txt?x=1"), {"If-None-Match": '"nope"'})
    assert server.count("/feeds.txt") == 4
    assert server.count("/feeds.txt?x=1") == 1
    assert server.requests[-1] == ("GET", "/feeds.txt?x=1", 200, True)
    assert all(len(record) == 4 for record in server.requests)


def test_other_methods_are_refused(server: SiteServer) -> None:
    status, headers, _ = fetch(server.url(HARBOR_FEED), method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_stop_closes_the_port_and_open_connections(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("root is {{BASE}}", encoding="utf-8")
    server = SiteServer(tmp_path).start()
    idle = None
    try:
        status, _, body = fetch(server.url("/a.txt"))
        assert (status, body) == (200, f"root is {server.base_url}".encode())
        url = server.url("/a.txt")
        # A kept-alive connection left idle would hold a handler thread for its idle
        # timeout: stop closes it instead.
        idle = socket.create_connection((server.host, urllib.parse.urlsplit(url).port))
        idle.sendall(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(10)
        assert idle.recv(12).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
    with idle:
        received = b"".join(iter(lambda: idle.recv(65536), b""))  # ends at the close
    assert received.endswith(b"root is " + server.base_url.encode())
    assert not server.running
    server.stop()  # a second stop is a no-op
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_command_line_serves_the_demo() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.demo.server", "--port", "0"],
                            cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the server printed nothing"
        line = proc.stdout.readline()
        base = line.split(" at ", 1)[1].strip()
        assert base.startswith("http://127.0.0.1:")
        status, _, body = fetch(base + "/feeds.yaml")
        assert status == 200 and base.encode() in body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- the corpus ------------------------------------------------------------------------


def test_every_listed_feed_is_served(server: SiteServer, manifest: dict) -> None:
    urls = yaml_feed_urls(server)
    assert urls == [resolve(u, server) for u in manifest["feeds"]]
    failures = [(url, fetch(url)[0]) for url in urls if fetch(url)[0] != 200]
    assert failures == []


def test_feed_lists_agree(server: SiteServer) -> None:
    from_yaml = yaml_feed_urls(server)
    opml = ET.fromstring(resolve(FEEDS_OPML.read_text(encoding="utf-8"), server))
    from_opml = [o.get("xmlUrl") for o in opml.iter("outline") if o.get("xmlUrl")]
    from_txt = [line.strip() for line in resolve(FEEDS_TXT.read_text(encoding="utf-8"),
                                                 server).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert from_yaml == from_opml == from_txt
    doc = yaml.safe_load(FEEDS_YAML.read_text(encoding="utf-8"))
    assert {item["language"] for item in doc["feeds"]} == {"en", "uk", "ru", "de"}
    assert all(set(item) <= {"url", "name", "language", "topic"} for item in doc["feeds"])
    assert 2 <= sum("topic" in item for item in doc["feeds"]) <= 3


def test_article_links_resolve_except_the_dead_one(server: SiteServer, manifest: dict) -> None:
    statuses = {}
    for entry in manifest["entries"]:
        statuses[entry["link"]] = fetch(resolve(entry["link"], server))[0]
    expected = {e["link"]: 404 if e["kind"] == "dead_link" else 200 for e in manifest["entries"]}
    assert statuses == expected
    assert sum(status == 404 for status in statuses.values()) == 1


def test_feeds_parse_and_match_the_manifest(server: SiteServer, manifest: dict) -> None:
    by_feed: dict[str, list[dict]] = {}
    for entry in manifest["entries"]:
        by_feed.setdefault(entry["feed"], []).append(entry)
    total = 0
    for feed in manifest["feeds"]:
        status, _, body = fetch(resolve(feed, server))
        assert status == 200
        parsed = feedparser.parse(body)
        if feed in manifest["malformed_feeds"]:
            assert parsed.bozo and len(parsed.entries) == 0, feed
            continue
        assert not parsed.bozo, (feed, parsed.get("bozo_exception"))
        assert len(parsed.entries) >= 1
        assert len(parsed.entries) == manifest["entries_by_feed"][feed]
        expected = by_feed[feed]
        assert [e.get("link") for e in parsed.entries] == [
            resolve(x["link"], server) for x in expected]
        assert [e.get("id") for e in parsed.entries] == [
            resolve(x["guid_or_null"], server) if x["guid_or_null"] else None for x in expected]
        total += len(parsed.entries)
    assert total == manifest["total_entries"] == len(manifest["entries"])


def test_manifest_is_consistent(manifest: dict) -> None:
    entries = manifest["entries"]
    counts = Counter(e["kind"] for e in entries)
    assert dict(counts) == manifest["counts_by_kind"]
    assert sum(counts.values()) == manifest["total_entries"]
    assert set(counts) <= {"article", "url_duplicate", "guid_collision", "dead_link",
                           "feed_fallback", "echo", "syndicated_copy"}
    echo = [e for e in entries if e["kind"] == "echo"]
    assert [e["link"] for e in echo] == manifest["echo_story_links"]
    assert len({e["feed"] for e in echo}) >= 5
    assert {e["language"] for e in echo} == {"en", "uk", "ru", "de"}
    links = {e["link"] for e in entries}
    assert set(manifest["syndicated_links"]) <= links
    copies = [e for e in entries if e["kind"] == "syndicated_copy"]
    assert [c["link"] for c in copies] == manifest["syndicated_links"][1:]
    for dup in (e for e in entries if e["kind"] == "url_duplicate"):
        assert dup["duplicate_of"] in links
        assert dup["link"].startswith(dup["duplicate_of"] + "?utm_source=rss")
    guids = Counter(e["guid_or_null"] for e in entries if e["guid_or_null"])
    collided = [e for e in entries if e["kind"] == "guid_collision"]
    assert collided and all(guids[e["guid_or_null"]] == 2 for e in collided)
    assert manifest["unique_canonical_urls"] == len(entries) - counts["url_duplicate"]
    assert Counter(e["date_quality"] for e in entries) == {
        "ok": len(entries) - 2, "missing": 1, "implausible": 1}


def test_pages_extract_cleanly_in_their_language(server: SiteServer, manifest: dict) -> None:
    import langdetect
    import trafilatura

    langdetect.DetectorFactory.seed = 0
    boilerplate = ["cookie", "©", "All rights reserved", "Alle Rechte vorbehalten",
                   "Усі права захищено", "Все права защищены", "Impressum"]
    seen = set()
    for entry in manifest["entries"]:
        page = entry.get("page")
        if page is None or page in seen:
            continue
        seen.add(page)
        status, _, body = fetch(resolve(page, server))
        assert status == 200
        text = trafilatura.extract(body.decode("utf-8"), include_comments=False) or ""
        if entry["kind"] == "feed_fallback":
            assert len(text) < 200, page  # too thin: the pipeline uses the feed's content
            continue
        assert len(text) > 800, page
        assert not [b for b in boilerplate if b in text], page
        assert langdetect.detect(text) == entry["language"], page
    assert len(seen) == len(list(SITE_DIR.glob("*/2024/11/*.html")))


def test_the_demo_server_moves_to_another_port_when_its_own_is_busy(capsys):
    import socket

    from pipelines.demo.run import demo_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = demo_server(port)
        try:
            assert server.base_url.startswith("http://127.0.0.1:")
            assert not server.base_url.endswith(f":{port}")
        finally:
            server.stop()
    assert f"Port {port} is busy" in capsys.readouterr().out
