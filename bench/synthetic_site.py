"""A generated news site for benchmarks: N feeds x M articles, served from memory.

Run as a separate process so the server does not compete with the measured code for
the interpreter lock::

    python bench/synthetic_site.py --feeds 20 --per-feed 100 --port 0
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.demo.server import SiteServer  # noqa: E402

WORDS = ("council minister budget railway bridge election court harbour energy winter grid "
         "farmers exports market shares inflation rates bank school hospital doctors nurses "
         "match league coach striker season festival film director museum exhibition storm "
         "river flood drought vaccine research university students teachers union strike "
         "factory chips software startup investors regulator parliament vote coalition "
         "opposition mayor city region village police investigation report statement "
         "officials sources agency spokesperson negotiations agreement treaty summit").split()


_VOCAB: list[str] = []
_WEIGHTS: list[float] = []


def _vocabulary() -> tuple[list[str], list[float]]:
    """English words with their frequencies, so texts have a realistic long tail."""
    if not _VOCAB:
        from wordfreq import top_n_list, word_frequency

        words = [w for w in top_n_list("en", 20000) if w.isalpha()]
        _VOCAB.extend(words)
        _WEIGHTS.extend(word_frequency(w, "en") for w in words)
    return _VOCAB, _WEIGHTS


def paragraph(rng: random.Random, sentences: int, topic: list[str] | None = None) -> str:
    """Sentences drawn by word frequency, seeded with the story's own rare words."""
    vocab, weights = _vocabulary()
    out = []
    for _ in range(sentences):
        words = rng.choices(vocab, weights=weights, k=rng.randint(10, 22))
        if topic:
            words[rng.randrange(len(words))] = rng.choice(topic)
        out.append(" ".join(["The", *words]) + ".")
    return " ".join(out)


def make_site(feeds: int, per_feed: int, base: str, seed: int = 7,
              latency: float = 0.0) -> dict[str, tuple[str, bytes]]:
    """Returns {path: (content_type, body)} for every feed and article page."""
    rng = random.Random(seed)
    pages: dict[str, tuple[str, bytes]] = {}
    for f in range(feeds):
        items = []
        for a in range(per_feed):
            path = f"/outlet{f}/2024/11/story-{a}.html"
            # Each story has its own names and rare words, as real stories do.
            vocab = _vocabulary()[0]
            topic = [w.title() for w in rng.sample(vocab[5000:], 3)] + rng.sample(vocab[2000:], 4)
            title = f"Story {f}-{a}: " + " ".join([*topic[:3], *rng.choices(WORDS, k=3)])
            paras = "".join(f"<p>{paragraph(rng, 4, topic)}</p>" for _ in range(6))
            html = (f"<!doctype html><html><head><title>{title}</title>"
                    f'<meta name="author" content="Writer {a % 13}">'
                    f'<meta property="article:published_time" content="2024-11-2{a % 5}T10:00:00Z">'
                    f"</head><body><nav><a href='/'>Home</a> <a href='/world'>World</a> "
                    f"<a href='/sport'>Sport</a></nav><article><h1>{title}</h1>{paras}"
                    f"</article><aside>Most read: five other stories</aside>"
                    f"<footer>Copyright Outlet {f}. All rights reserved.</footer></body></html>")
            pages[path] = ("text/html; charset=utf-8", html.encode())
            items.append(f"<item><title>{title}</title><link>{base}{path}</link>"
                         f"<guid>{base}{path}</guid>"
                         f"<pubDate>Sat, 2{a % 5} Nov 2024 10:00:00 GMT</pubDate>"
                         f"<category>{'Sport' if a % 4 == 0 else 'Business'}</category>"
                         f"<description>{paragraph(rng, 1)}</description></item>")
        rss = (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
               f"<title>Outlet {f}</title><link>{base}/outlet{f}/</link>{''.join(items)}"
               f"</channel></rss>")
        pages[f"/outlet{f}/feed.xml"] = ("application/rss+xml; charset=utf-8", rss.encode())
    return pages


def serve(feeds: int, per_feed: int, port: int, latency: float) -> None:
    """Serves the site on the project's loopback server until stdin closes."""
    with SiteServer(root=None, port=port, latency=latency) as server:
        for path, (ctype, body) in make_site(feeds, per_feed, server.base_url).items():
            server.add(path, body, ctype)
        print(server.base_url, flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=20)
    ap.add_argument("--per-feed", type=int, default=100)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    a = ap.parse_args()
    serve(a.feeds, a.per_feed, a.port, a.latency)
