"""Controls users ask for, end to end over loopback through the real pipeline, Parquet read
back: the ``--languages`` filter, per-feed headers, cookies and basic auth with secrets
from the environment, and the HTTP proxy that keeps the private-network guard."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.demo.run import demo_feeds_file
from pipelines.demo.server import SiteServer
from pipelines.ingest import run
from tests.loopback import Site, article_html, rss
from transforms.extraction.language import parse_languages

pytestmark = pytest.mark.slow


def table(out: Path, name: str) -> list[dict]:
    if not (out / name).exists():
        return []
    return ds.dataset(out / name, format="parquet", partitioning="hive").to_table().to_pylist()


def feeds_file(server: SiteServer, folder: Path, outlets: list[str]) -> str:
    """The demo feed list cut down to ``outlets`` (YAML, languages declared)."""
    full = Path(demo_feeds_file(server.base_url, str(folder))).read_text(encoding="utf-8")
    blocks = full.split("\n  - ")
    kept = [blocks[0]] + [b for b in blocks[1:] if any(f"/{o}/" in b for o in outlets)]
    path = folder / "some.yaml"
    path.write_text("\n  - ".join(kept), encoding="utf-8")
    return str(path)


def test_parse_languages():
    assert parse_languages(" en, UK,und ") == {"en", "uk", "und"}
    with pytest.raises(ValueError, match="'english'"):
        parse_languages("en,english")
    with pytest.raises(ValueError, match="at least one"):
        parse_languages(" , ")


def test_languages_filter_leaves_other_languages_out_with_one_error_each(tmp_path):
    out = tmp_path / "out"
    with SiteServer() as server:
        feeds = feeds_file(server, tmp_path, ["harbor-ledger", "dniprovyi-visnyk",
                                              "vostochny-kurier", "rheinblick"])
        _, s = run(["--feeds", feeds, "--output", str(out), "--allow-private-network",
                    "--per-host-delay", "0", "--story-similarity", "lexical",
                    "--languages", "en,uk"], quiet=True)
    articles, errors = table(out, "articles"), table(out, "errors")
    assert articles and {a["language"] for a in articles} == {"en", "uk"}
    filtered = [e for e in errors if e["reason"] == "language_filtered"]
    assert filtered and all(e["level"] == "entry" and e["stage"] == "filter_language"
                            for e in filtered)
    assert {e["feed_url"].split("/")[-2] for e in filtered} == {"vostochny-kurier",
                                                                "rheinblick"}
    assert all("is not among --languages en,uk" in e["message"] for e in filtered)
    # Every entry read is one article, duplicate or entry error: the filtered ones too.
    assert s.balanced and s.entry_errors >= len(filtered)
    assert s.counters["articles_language_filtered"] == len(filtered)


# -- per-feed headers, cookies and basic auth ---------------------------------------------

SECRET_PASSWORD = "s3cret-pass-7731"
SECRET_KEY = "key-5f0e2a91"
SECRET_COOKIE = "sess-88d1c0"


@pytest.mark.parametrize("mode", [[], ["--refetch"]], ids=["remembering", "refetch"])
def test_feed_credentials_reach_the_feed_and_its_pages_only_and_are_never_written(
        tmp_path, monkeypatch, capsys, caplog, mode):
    # A remembering run polls the feeds in the launcher; --refetch reads them in the
    # pipeline's feed stage: both send the feed's credentials.
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MEMBERS_PASSWORD", SECRET_PASSWORD)
    monkeypatch.setenv("MEMBERS_KEY", SECRET_KEY)
    monkeypatch.setenv("MEMBERS_SESSION", SECRET_COOKIE)
    monkeypatch.setenv("WRONG_PASSWORD", "not-the-password")
    token = base64.b64encode(f"reader:{SECRET_PASSWORD}".encode()).decode()
    demand = {"Authorization": f"Basic {token}", "X-Api-Key": SECRET_KEY,
              "Cookie": f"session={SECRET_COOKIE}", "Accept-Language": "en"}
    out = tmp_path / "out"
    with Site(demand) as members, Site() as elsewhere:
        members.files["/feed.xml"] = ("application/rss+xml", rss([
            ("Budget agreed", f"{members.base}/budget.html"),
            ("Ferry timetable", f"{members.base}/ferry.html"),
            ("Elsewhere", f"{elsewhere.base}/other.html")]))
        members.files["/budget.html"] = ("text/html", article_html("Budget agreed"))
        members.files["/ferry.html"] = ("text/html", article_html("Ferry timetable"))
        members.files["/wrong.xml"] = members.files["/feed.xml"]
        elsewhere.files["/other.html"] = ("text/html", article_html("Elsewhere"))
        config = tmp_path / "feeds.yaml"
        config.write_text(f"""feeds:
  - url: {members.base}/feed.xml
    headers: {{Accept-Language: en}}
    headers_env: {{X-Api-Key: MEMBERS_KEY}}
    cookies_env: {{session: MEMBERS_SESSION}}
    auth: {{username: reader, password_env: MEMBERS_PASSWORD}}
  - url: {members.base}/wrong.xml
    auth: {{username: reader, password_env: WRONG_PASSWORD}}
  - url: {members.base}/unset.xml
    auth: {{username: reader, password_env: NOT_SET_ANYWHERE}}
""", encoding="utf-8")
        _, s = run(["--feeds", str(config), "--output", str(out), "--allow-private-network",
                    "--per-host-delay", "0", "--story-similarity", "lexical", *mode])
        members_log, elsewhere_log = list(members.log), list(elsewhere.log)
    articles, errors = table(out, "articles"), table(out, "errors")
    assert sorted(a["title"] for a in articles) == ["Budget agreed", "Elsewhere",
                                                    "Ferry timetable"]
    assert s.balanced
    # The feed and its pages on its origin carried every credential; robots.txt, the
    # page on another origin and the feed with the wrong password did not get them.
    sent = {path: h for path, h in members_log}
    for path in ("/feed.xml", "/budget.html", "/ferry.html"):
        assert all(sent[path].get(k.lower()) == v for k, v in demand.items()), path
    assert "authorization" not in sent["/robots.txt"]
    assert all("authorization" not in h and "cookie" not in h and "x-api-key" not in h
               for _, h in elsewhere_log)
    assert sent["/wrong.xml"]["authorization"] != demand["Authorization"]
    reasons = {(e["url"].rsplit("/", 1)[-1], e["reason"]) for e in errors}
    assert ("wrong.xml", "http_401") in reasons
    unset = [e for e in errors if e["reason"] == "bad_source"]
    assert len(unset) == 1 and "environment variable NOT_SET_ANYWHERE is not set" in (
        unset[0]["message"])
    # No secret in any file below the output (tables, state, manifests), nor printed,
    # nor logged.
    secrets = [SECRET_PASSWORD, SECRET_KEY, SECRET_COOKIE, token, "not-the-password",
               base64.b64encode(b"reader:not-the-password").decode()]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert any("_state" in p.parts for p in files) == (not mode)
    for p in files:
        data = p.read_bytes()
        assert not any(x.encode() in data for x in secrets), p
    printed = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (printed.out, printed.err, logged):
        assert not any(x in text for x in secrets)


def test_credential_settings_are_checked_without_echoing_values(tmp_path, monkeypatch):
    from transforms.feeds.credentials import CredentialError, request_credentials

    env = {"PW": "hunter2-secret"}
    creds = dict(request_credentials({"auth": {"username": "u", "password_env": "PW"},
                                      "cookies": {"a": "1"}}, env))
    assert creds["Cookie"] == "a=1" and creds["Authorization"].startswith("Basic ")
    for item, message in (
            ({"auth": {"username": "u", "password": "hunter2-secret"}}, "password_env"),
            ({"headers": {"X-Key": "a\r\nInjected: 1"}}, "line break"),
            ({"headers": {"Host": "x"}}, "cannot be set"),
            ({"headers_env": {"X-Key": "MISSING"}}, "MISSING is not set"),
            ({"cookies": {"a": "1; b=2"}}, "';'")):
        with pytest.raises(CredentialError, match=message) as caught:
            request_credentials(item, env)
        assert "hunter2" not in str(caught.value)


# -- the HTTP(S) proxy ---------------------------------------------------------------------

PROXY_PASSWORD = "proxy-pw-40be"


class ForwardProxy:
    """A small forwarding proxy on 127.0.0.1: absolute-URI GETs and CONNECT tunnels.

    It demands ``Proxy-Authorization`` when ``auth`` is set and logs (method, target) of
    every request. Each upstream exchange and tunnel is bounded by a 10 s timeout.
    """

    def __init__(self, auth: str | None = None):
        import http.client
        import http.server
        import select
        import socket
        import threading
        from urllib.parse import urlsplit

        self.log: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _authorised(self) -> bool:
                if auth is None or self.headers.get("Proxy-Authorization") == auth:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_GET(self):  # noqa: N802 - http.server's name
                proxy.log.append(("GET", self.path))
                if not self._authorised():
                    return
                target = urlsplit(self.path)
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80,
                                                      timeout=10)
                hop = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                path = target.path + (f"?{target.query}" if target.query else "")
                try:
                    upstream.request("GET", path, headers=headers)
                    answer = upstream.getresponse()
                    body = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_CONNECT(self):  # noqa: N802 - http.server's name
                proxy.log.append(("CONNECT", self.path))
                if not self._authorised():
                    return
                host, port = self.path.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=10)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                ends = [self.connection, upstream]
                try:
                    for _ in range(10_000):  # bounded relay
                        ready, _, _ = select.select(ends, [], [], 10)
                        if not ready:
                            break
                        done = False
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                done = True
                                break
                            (upstream if end is self.connection else self.connection
                             ).sendall(data)
                        if done:
                            break
                finally:
                    upstream.close()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def serve_two_articles(site: Site) -> str:
    """Puts a feed and two article pages on ``site``; returns a YAML feed list's text."""
    site.files["/feed.xml"] = ("application/rss+xml", rss([
        ("Budget agreed", f"{site.base}/budget.html"),
        ("Ferry timetable", f"{site.base}/ferry.html")]))
    site.files["/budget.html"] = ("text/html", article_html("Budget agreed"))
    site.files["/ferry.html"] = ("text/html", article_html("Ferry timetable"))
    return f"feeds:\n  - url: {site.base}/feed.xml\n"


def test_proxy_forwards_http_and_keeps_the_private_network_guard(tmp_path, capsys):
    import base64

    auth = "Basic " + base64.b64encode(f"reader:{PROXY_PASSWORD}".encode()).decode()
    with Site() as site, ForwardProxy(auth) as proxy:
        config = tmp_path / "feeds.yaml"
        config.write_text(serve_two_articles(site), encoding="utf-8")
        proxy_url = f"http://reader:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        common = ["--feeds", str(config), "--per-host-delay", "0",
                  "--story-similarity", "lexical", "--proxy", proxy_url]
        # Without --allow-private-network the loopback target is refused before anything
        # is handed to the proxy.
        _, refused = run([*common, "--output", str(tmp_path / "refused")])
        assert proxy.log == [] and site.log == []
        # Allowed: every request (robots.txt, feed, pages) goes through the proxy.
        _, allowed = run([*common, "--output", str(tmp_path / "out"),
                          "--allow-private-network"])
        through = [target for method, target in proxy.log]
    errors = table(tmp_path / "refused", "errors")
    assert [(e["level"], e["reason"]) for e in errors] == [("feed", "blocked_address")]
    assert "--allow-private-network" in errors[0]["message"] and refused.balanced
    articles = table(tmp_path / "out", "articles")
    assert sorted(a["title"] for a in articles) == ["Budget agreed", "Ferry timetable"]
    assert allowed.balanced
    for path in ("/robots.txt", "/feed.xml", "/budget.html", "/ferry.html"):
        assert f"{site.base}{path}" in through
    assert {p for p, _ in site.log} == {"/robots.txt", "/feed.xml", "/budget.html",
                                        "/ferry.html"}
    for p in (tmp_path / "out").rglob("*"):
        assert not p.is_file() or PROXY_PASSWORD.encode() not in p.read_bytes()
    printed = capsys.readouterr()
    assert PROXY_PASSWORD not in printed.out + printed.err


def test_proxy_tunnels_https_with_connect_and_checks_the_certificate(tmp_path, monkeypatch):
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # The client checks certificates against the default store; point it at the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    site = Site()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    site.server.socket = context.wrap_socket(site.server.socket, server_side=True)
    with site, ForwardProxy() as proxy:
        https_base = site.base.replace("http://", "https://")
        site.files["/feed.xml"] = ("application/rss+xml", rss([
            ("Budget agreed", f"{https_base}/budget.html"),
            ("Ferry timetable", f"{https_base}/ferry.html")]))
        site.files["/budget.html"] = ("text/html", article_html("Budget agreed"))
        site.files["/ferry.html"] = ("text/html", article_html("Ferry timetable"))
        config = tmp_path / "feeds.yaml"
        config.write_text(f"feeds:\n  - url: {https_base}/feed.xml\n", encoding="utf-8")
        _, s = run(["--feeds", str(config), "--output", str(tmp_path / "out"),
                    "--allow-private-network", "--per-host-delay", "0",
                    "--story-similarity", "lexical", "--proxy",
                    f"http://127.0.0.1:{proxy.port}"], quiet=True)
        methods = {m for m, _ in proxy.log}
        targets = {t for _, t in proxy.log}
        served = {p for p, _ in site.log}
    articles = table(tmp_path / "out", "articles")
    assert sorted(a["title"] for a in articles) == ["Budget agreed", "Ferry timetable"]
    assert s.balanced
    # Only tunnels: the proxy never saw a request line of the site, only CONNECT.
    assert methods == {"CONNECT"} and targets == {site.base.removeprefix("http://")}
    assert {"/feed.xml", "/budget.html", "/ferry.html"} <= served


def test_proxy_settings_from_the_command_line_and_the_environment():
    from transforms.fetching.proxy import ProxyConfigError, bypassed, proxies_from, redact

    assert proxies_from("http://u:p@proxy:3128") == (
        (("http", "http://u:p@proxy:3128"), ("https", "http://u:p@proxy:3128")), "")
    assert proxies_from("") == ((), "")
    env = {"HTTPS_PROXY": "http://p:8080", "NO_PROXY": "example.org,.internal"}
    assert proxies_from(None, env) == ((("https", "http://p:8080"),), "example.org,.internal")
    assert bypassed("news.example.org", "example.org") and not bypassed("x.com", "example.org")
    assert redact("http://user:secret@proxy:3128") == "http://proxy:3128"
    with pytest.raises(ProxyConfigError) as caught:
        proxies_from("socks5://user:secret@proxy:1080")
    assert "secret" not in str(caught.value)


def test_bad_languages_and_proxy_options_are_refused_before_anything_runs(tmp_path, capsys):
    from pipelines.ingest import parse_args
    from pipelines.preflight import UsageError

    base = ["--feeds", "https://example.org/feed.xml", "--output", str(tmp_path / "o")]
    with pytest.raises(UsageError, match="not ISO 639 codes: 'english'"):
        parse_args([*base, "--languages", "en,english"])
    with pytest.raises(UsageError) as caught:
        parse_args([*base, "--proxy", "socks5://reader:hunter2@proxy:1080"])
    assert "give http://HOST:PORT" in str(caught.value) and "hunter2" not in str(caught.value)
    assert "hunter2" not in capsys.readouterr().err
    config, _ = parse_args([*base, "--languages", "en,uk", "--proxy",
                            "http://reader:hunter2@proxy:3128"])
    assert config.languages == {"en", "uk"}
    assert dict(config.policy.proxies) == {"http": "http://reader:hunter2@proxy:3128",
                                           "https": "http://reader:hunter2@proxy:3128"}
    assert "hunter2" not in repr(config.policy)
    assert not (tmp_path / "o").exists()
