"""Feeds whose items point at hosts that do not resolve (benchmark, not a test).

A loopback server in its own process serves ``--feeds`` RSS feeds of ``--items`` items
each, each feed on a host name of its own (``outletNNN.bench.test``, pinned to 127.0.0.1
through ``FetchPolicy.host_overrides``, as one outlet per host is the usual case: on one
shared host the per-host delay alone would space 100 feeds over 100 s). Every item links
to a page on one of ``--hosts`` names under ``.invalid`` (RFC 2606: they never resolve),
so each dead host carries items from several feeds. The real
``newsbeam ingest`` pipeline (DirectRunner, default politeness: 2 requests in flight and
1 s between starts per host) reads them all with the machine's own resolver, and the run
is checked from the Parquet it published: entries read = articles + duplicates + entry
errors. Each run is a fresh process, so no breaker or limiter state carries over.

Modes: ``breaker`` (the default policy) and ``no-breaker`` (``breaker_failures=0``: every
URL of a dead host waits for its host slot and spacing, the old behaviour); by default
the breaker on 100 feeds, then both on ``--small-feeds`` feeds side by side.

Run::

    nice .venv/bin/python bench/bench_dead_hosts.py
    nice .venv/bin/python bench/bench_dead_hosts.py --runs breaker:100,no-breaker:10
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOMAIN = "newsbeam-bench.invalid"


def outlet(feed: int) -> str:
    return f"outlet{feed:03d}.bench.test"


def feed_xml(base: str, feed: int, items: int, hosts: int) -> bytes:
    parts = []
    for k in range(items):
        host = f"h{(feed * items + k) % hosts:03d}.{DOMAIN}"
        link = f"http://{host}/news/{feed}-{k}.html"
        parts.append(f"<item><title>Story {feed}-{k}</title><link>{link}</link>"
                     f"<guid>{link}</guid><pubDate>Sat, 23 Nov 2024 08:00:00 GMT</pubDate>"
                     f"<description>Summary of story {feed}-{k}.</description></item>")
    return (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>Feed {feed}</title><link>{base}/</link>{''.join(parts)}</channel></rss>"
            ).encode()


def serve(feeds: int, items: int, hosts: int, conn) -> None:
    """Serves the feeds until told to stop (runs in a child process)."""
    bodies: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            body = bodies.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    for f in range(feeds):
        bodies[f"/feeds/{f}.xml"] = feed_xml(base, f, items, hosts)
    conn.send(base)
    import threading

    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    conn.recv()
    httpd.shutdown()


def one_run(mode: str, base: str, feeds: int) -> dict:
    """Runs the pipeline once in this process; returns its figures."""
    import apache_beam as beam

    from pipelines.execute import counters
    from pipelines.ingest import parse_args
    from pipelines.stages import batch_source, build
    from pipelines.summary import cleanup_staging, summarize

    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp, "feeds.txt")
        port = base.rsplit(":", 1)[1]
        listing.write_text("".join(f"http://{outlet(f)}:{port}/feeds/{f}.xml\n"
                                   for f in range(feeds)))
        out = str(Path(tmp, "out"))
        # Timed from option parsing on, which loaded the sentence encoder before it moved
        # into the workers' setup: the start-up counted is the same either way.
        started = time.monotonic()
        config, options = parse_args(["--feeds", str(listing), "--output", out])
        policy = config.policy.replace(
            host_overrides=tuple((outlet(f), "127.0.0.1") for f in range(feeds)))
        if mode == "no-breaker":
            policy = policy.replace(breaker_failures=0)
        config = dataclasses.replace(config, policy=policy)
        pipeline = beam.Pipeline(options=options)
        build(pipeline, config, batch_source(config))
        result = pipeline.run()
        result.wait_until_finish()
        cleanup_staging(out, config.run_id)
        summary = summarize(out, config.run_id, counters(result))
        elapsed = time.monotonic() - started
        import pyarrow.dataset as ds

        errors = ds.dataset(os.path.join(out, "errors"), partitioning="hive").to_table()
        attempts = collections.Counter(errors.column("attempts").to_pylist())
    return {"mode": mode, "feeds": feeds, "seconds": round(elapsed, 1),
            "entries": summary.entries_read, "articles": summary.articles,
            "duplicates": summary.duplicates, "entry_errors": summary.entry_errors,
            "feed_errors": summary.feed_errors, "balanced": summary.balanced,
            "reasons": dict(summary.errors_by_reason),
            "attempts": {str(k): v for k, v in sorted(attempts.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20, help="Items per feed (20).")
    parser.add_argument("--hosts", type=int, default=10, help="Dead hosts (10).")
    parser.add_argument("--runs", default="breaker:100,breaker:10,no-breaker:10",
                        help="mode:feeds,... (default breaker:100,breaker:10,no-breaker:10)")
    parser.add_argument("--one", nargs=3, metavar=("MODE", "BASE", "FEEDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], args.one[1], int(args.one[2]))))
        return
    runs = [(m, int(n)) for m, n in (r.split(":") for r in args.runs.split(","))]
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(
        target=serve, args=(max(n for _, n in runs), args.items, args.hosts, child),
        daemon=True)
    server.start()
    base = parent.recv()
    print(f"{args.items} items per feed over {args.hosts} hosts under .invalid; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        for mode, feeds in runs:
            done = subprocess.run([sys.executable, __file__, "--one", mode, base, str(feeds)],
                                  capture_output=True, text=True, check=True, timeout=3600)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            per_host = feeds * args.items / args.hosts
            print(f"{mode:>10} {feeds:>4} feeds: {figures['seconds']:>7.1f} s; entries "
                  f"{figures['entries']} = {figures['articles']} articles + "
                  f"{figures['duplicates']} duplicates + {figures['entry_errors']} entry "
                  f"errors: {'balanced' if figures['balanced'] else 'MISMATCH'}; "
                  f"{per_host:g} URLs per host; errors by reason {figures['reasons']}; "
                  f"error rows by attempts {figures['attempts']}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        parent.send("stop")
        server.join(10)


if __name__ == "__main__":
    main()
