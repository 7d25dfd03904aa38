"""A small loopback web site for end-to-end tests: files set per test, optional required
headers, and a log of every request's headers."""

from __future__ import annotations

TOPICS = {
    "Budget agreed": "The council agreed next year's harbour budget after a long debate "
                     "about dredging costs and the price of berths for fishing boats.",
    "Ferry timetable": "A new winter ferry timetable cuts the late crossings to the islands, "
                       "and commuters say the early boat is already full every morning.",
    "Elsewhere": "Volunteers planted four hundred oak saplings along the river path, "
                 "hoping the young wood will hold the bank when the floods return.",
    "Storm warning": "Forecasters issued an amber warning as gales are expected to batter "
                     "the coast overnight, with gusts strong enough to bring down trees.",
    "School reopens": "The village school reopened its doors after a summer of repairs to "
                      "the roof, and pupils found new classrooms and a bigger library.",
    "Market prices": "Cattle prices at the autumn market rose for a third week as buyers "
                     "from the mainland competed for the last young stock of the season.",
}


def article_html(title: str) -> str:
    body = " ".join([TOPICS[title]] * 8)
    return (f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
            f"<p>{body}</p></article></body></html>")


def rss(items: list[tuple[str, str]]) -> str:
    entries = "".join(f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid>"
                      "<pubDate>Mon, 25 Nov 2024 08:00:00 +0000</pubDate></item>"
                      for t, link in items)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Members</title>'
            f"{entries}</channel></rss>")


class Site:
    """A loopback site whose files may demand credentials; logs each request's headers."""

    def __init__(self, demand: dict[str, str] | None = None):
        import http.server
        import threading

        self.files: dict[str, tuple[str, str | bytes]] = {}
        self.log: list[tuple[str, dict[str, str]]] = []
        self.demand = demand or {}
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                headers = {k.lower(): v for k, v in self.headers.items()}
                site.log.append((self.path, headers))
                if self.path == "/robots.txt":
                    return self._send(*(200, *site.files[self.path]) if self.path in site.files
                                      else (404, "text/plain", ""))
                if self.path not in site.files:
                    return self._send(404, "text/plain", "no such page")
                if any(headers.get(k.lower()) != v for k, v in site.demand.items()):
                    return self._send(401, "text/plain", "credentials required")
                self._send(200, *site.files[self.path])

            def _send(self, status, ctype, body):
                data = body.encode("utf-8") if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
