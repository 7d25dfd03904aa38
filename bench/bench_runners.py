"""The same work on each local Beam runner, side by side in one run.

Two measurements:

* **throughput**: the generated site of ``bench/synthetic_site.py`` (20 feeds x 100
  articles by default, served from memory by a separate process on 127.0.0.1) ingested in
  batch by ``newsbeam ingest`` on each runner, interleaved round by round so that machine
  noise hits all of them alike:

  - ``fnapi``: the FnApiRunner, one worker (what a local run uses by default);
  - ``fnapi-2w``: ``--direct_running_mode=multi_processing --direct_num_workers=2``;
  - ``prism``: Beam's Prism runner (``deploy/local-runners.sh`` builds it), SDK harness
    in the launching process (LOOPBACK).

  Each run is a fresh process. Peak memory is the largest sum of resident memory over the
  run's process tree (the launcher, SDK workers, the Prism process), sampled from /proc
  every 0.2 s, beside ``getrusage``'s largest single process.

* **delay**: from an item appearing in a feed to its row being readable in the published
  output, continuous ingestion: ``newsbeam watch`` (a batch pipeline per poll cycle) and
  the unbounded pipeline on Prism (``--streaming --stop-after``), with the same poll
  interval, on a feed served here that lists one new item every ``--gap`` seconds. A row
  counts as readable once a published Parquet file (never a staged one) holds its URL.

Usage::

    python bench/bench_runners.py [--feeds 20 --per-feed 100 --rounds 1]
        [--modes fnapi,fnapi-2w,prism] [--delay-modes watch,prism-stream]
        [--poll-interval 5 --items 12 --gap 2.5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402
    child_command,
    ingest_site,
    run_sampled,
    site_arguments,
    synthetic_site,
)
from synthetic_site import paragraph  # noqa: E402

from pipelines.runners import require_prism  # noqa: E402

# -- throughput ----------------------------------------------------------------------------

def runner_args(mode: str) -> list[str]:
    if mode == "fnapi":
        return ["--runner=FnApiRunner"]
    if mode == "fnapi-2w":
        return ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    if mode == "prism":
        return ["--runner=PrismRunner", f"--prism_location={require_prism()}"]
    raise SystemExit(f"unknown mode {mode}")


def child(mode: str, base: str, feeds: int, similarity: str) -> None:
    """One batch run; prints a JSON line."""
    with tempfile.TemporaryDirectory(prefix="nb-runners-") as out:
        summary = ingest_site(base, feeds, out, similarity, runner_args(mode))
    print(json.dumps({"mode": mode, "articles": summary.articles,
                      "balanced": summary.balanced}))


def throughput(a) -> None:
    results: dict[str, list[dict]] = {m: [] for m in a.modes.split(",") if m}
    with synthetic_site(a.feeds, a.per_feed) as base:
        for r in range(a.rounds):
            for mode in results:
                proc, seconds, peak = run_sampled(
                    child_command(__file__, mode, base, a.feeds, a.similarity),
                    cwd=HERE.parent)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                res.update(seconds=seconds, peak_mb=peak)
                results[mode].append(res)
                print(f"round {r + 1} {mode:9} {res['articles']} articles in {seconds:.1f} s "
                      f"= {res['articles'] / seconds:.1f}/s, peak tree RSS {peak:.0f} MB, "
                      f"accounting {'OK' if res['balanced'] else 'OPEN'}", flush=True)
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if not results:
        return
    rate = {m: statistics.median(x["articles"] / x["seconds"] for x in v)
            for m, v in results.items() if v}
    first = next(iter(rate))
    print(f"\nthroughput: {a.feeds * a.per_feed} articles, median of {a.rounds} round(s), "
          f"story similarity {a.similarity}, start-up included, load average "
          f"{os.getloadavg()[0]:.1f}")
    for m, v in results.items():
        print(f"  {m:9} {rate[m]:6.1f} articles/s   ratio to {first} "
              f"{rate[m] / rate[first]:.2f}   peak tree RSS "
              f"{max(x['peak_mb'] for x in v):.0f} MB")
    print(f"  (largest single process of all runs, getrusage: {largest:.0f} MB)")


# -- item-to-readable-row delay ------------------------------------------------------------

class LiveFeed:
    """A feed on 127.0.0.1 that lists item k from ``start + k * gap`` on."""

    def __init__(self, items: int, gap: float):
        rng = random.Random(11)
        self.items, self.gap, self.start = items, gap, None
        self.pages = {}
        for k in range(items):
            topic = [f"Name{k}x{j}" for j in range(3)]
            text = "".join(f"<p>{paragraph(rng, 4, topic)}</p>" for _ in range(4))
            self.pages[f"/live/{k}.html"] = (
                f"<!doctype html><html lang='en'><head><title>Item {k}</title></head><body>"
                f"<article><h1>Item {k} {' '.join(topic)}</h1>{text}</article></body></html>")
        live = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path == "/live/feed.xml":
                    body, ctype = live.feed().encode(), "application/rss+xml"
                elif self.path in live.pages:
                    body, ctype = live.pages[self.path].encode(), "text/html; charset=utf-8"
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def appeared(self, k: int) -> float:
        return self.start + k * self.gap

    def feed(self) -> str:
        now = time.time()
        listed = [k for k in range(self.items) if self.start is not None
                  and self.appeared(k) <= now]
        items = "".join(
            f"<item><title>Item {k}</title><link>{self.base}/live/{k}.html</link>"
            f"<guid>{self.base}/live/{k}.html</guid>"
            f"<pubDate>Sat, 23 Nov 2024 10:00:00 GMT</pubDate></item>" for k in listed)
        return ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
                f"<title>Live</title><link>{self.base}/live/</link>{items}</channel></rss>")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _readable(out: Path, seen: dict[str, float]) -> None:
    """Notes the first time each URL is in a published articles file."""
    for path in (out / "articles").rglob("part-*.parquet") if (out / "articles").exists() \
            else []:
        if "_staging" in path.parts:
            continue
        try:
            urls = pq.read_table(path, columns=["url"]).column("url").to_pylist()
        except Exception:  # a file being written or renamed: read it on the next pass
            continue
        now = time.time()
        for url in urls:
            seen.setdefault(url.rsplit("/", 1)[-1], now)


def delay(mode: str, a) -> dict:
    live = LiveFeed(a.items, a.gap)
    span = a.items * a.gap
    with tempfile.TemporaryDirectory(prefix="nb-delay-") as tmp:
        out = Path(tmp) / "out"
        common = ["--feeds", f"{live.base}/live/feed.xml", "--output", str(out),
                  "--allow-private-network", "--per-host-delay", "0",
                  "--story-similarity", a.similarity, "--poll-interval", str(a.poll_interval)]
        if mode == "watch":
            # Enough cycles to see the last item, with a cycle's own time counted.
            cmd = [sys.executable, "-m", "pipelines.cli", "watch", *common, "--cycles",
                   str(int(span / a.poll_interval) + 3)]
        elif mode == "prism-stream":
            cmd = [sys.executable, "-m", "pipelines.cli", "ingest", *common, "--streaming",
                   "--stop-after", str(span + 3 * a.poll_interval),
                   *runner_args("prism")]
        else:
            raise SystemExit(f"unknown delay mode {mode}")
        seen: dict[str, float] = {}
        stop = threading.Event()

        def watch_output() -> None:
            while not stop.wait(0.25):
                _readable(out, seen)

        watcher = threading.Thread(target=watch_output, daemon=True)
        live.start = time.time() + 1.0
        watcher.start()
        try:
            _, seconds, peak = run_sampled(cmd, cwd=HERE.parent)
        finally:
            stop.set()
            watcher.join()
            live.close()
        _readable(out, seen)
    delays = [seen[f"{k}.html"] - live.appeared(k) for k in range(a.items)
              if f"{k}.html" in seen]
    return {"mode": mode, "rows": len(delays), "items": a.items, "seconds": seconds,
            "peak_mb": peak, "median": statistics.median(delays) if delays else None,
            "max": max(delays) if delays else None, "min": min(delays) if delays else None}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def delays(a) -> None:
    modes = [m for m in a.delay_modes.split(",") if m]
    if not modes:
        return
    print(f"\ndelay from an item's appearance to its readable row: {a.items} items, one "
          f"every {a.gap} s, poll interval {a.poll_interval} s, story similarity "
          f"{a.similarity}", flush=True)
    for mode in modes:
        r = delay(mode, a)
        print(f"  {mode:13} rows {r['rows']}/{r['items']}   delay median {_fmt(r['median'])}, "
              f"min {_fmt(r['min'])}, max {_fmt(r['max'])}   run {r['seconds']:.0f} s, "
              f"peak tree RSS {r['peak_mb']:.0f} MB, load average {os.getloadavg()[0]:.1f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    site_arguments(ap, rounds=1, modes="fnapi,fnapi-2w,prism")
    ap.add_argument("--similarity", default="lexical", choices=["multilingual", "lexical"],
                    help="Story similarity for every run (default lexical: the runners, "
                         "not the encoder, are measured).")
    ap.add_argument("--delay-modes", default="watch,prism-stream")
    ap.add_argument("--poll-interval", type=float, default=5.0)
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--gap", type=float, default=2.5)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.base, a.feeds, a.similarity)
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    throughput(a)
    delays(a)


if __name__ == "__main__":
    main()
