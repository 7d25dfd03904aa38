"""Page-fetch throughput under per-host limits (benchmark, not a test).

A threaded loopback server (``tests/faults.py``, in its own process so that it does not
compete with the fetcher for the GIL) plays 20 virtual hosts, ``site00.test`` …
``site19.test``, pinned to 127.0.0.1 through ``FetchPolicy.host_overrides``, and answers
every request after 200 ms. The real page stage runs over 400 pages listed host
by host (all of site00 first: the worst order for naive batching):

* ``dofn``: :class:`transforms.extraction.extract.FetchPagesFn` driven by hand (setup, start_bundle,
  process per entry, finish_bundle), fetch and trafilatura extraction included;
* ``pipeline``: the :class:`transforms.extraction.extract.FetchArticles` PTransform in a Beam
  pipeline on the DirectRunner; its wall time includes pipeline start-up;
* ``fetcher``: the :class:`transforms.fetching.politeness.PoliteFetcher` alone, without
  extraction, which shows what the network scheduling allows when CPU is not the limit.

It prints pages/s and the most requests the server ever saw in flight for one host
(robots.txt requests included), for each per-host delay asked for.

Run::

    .venv/bin/python bench/bench_fetch.py                       # delays 0.25 and 1.0 s
    .venv/bin/python bench/bench_fetch.py --delays 0 --mode dofn --pages 400
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import apache_beam as beam  # noqa: E402

from schemas import Article, Entry  # noqa: E402
from tests.faults import FaultServer  # noqa: E402
from transforms.extraction.extract import FetchArticles, FetchPagesFn  # noqa: E402
from transforms.fetching.http import FetchPolicy  # noqa: E402
from transforms.fetching.politeness import PoliteFetcher  # noqa: E402
from transforms.fetching.urls import stable_id  # noqa: E402

NOW = dt.datetime(2024, 11, 23, 12, 0, tzinfo=dt.UTC)


def _serve(latency: float, conn) -> None:
    with FaultServer(latency=latency) as server:
        conn.send(server.port)
        conn.recv()  # wait for "stop"
        conn.send((dict(server.peak), server.requests,
                   sum(n for (_, path), n in server.hits.items() if path.startswith("/article/"))))


@contextmanager
def server_process(latency: float):
    """Runs a FaultServer in a child process; yields (port, stats dict filled on exit)."""
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_serve, args=(latency, child), daemon=True)
    proc.start()
    stats: dict = {}
    try:
        if not parent.poll(30):
            raise RuntimeError("benchmark server did not start")
        yield parent.recv(), stats
    finally:
        parent.send("stop")
        if parent.poll(30):
            stats["peak"], stats["requests"], stats["pages"] = parent.recv()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


def entries(port: int, hosts: int, pages: int) -> list[Entry]:
    """``pages`` entries spread evenly over ``hosts``, listed host by host."""
    out = []
    per_host = pages // hosts
    for h in range(hosts):
        for i in range(per_host):
            url = f"http://site{h:02d}.test:{port}/article/{h}-{i}"
            out.append(Entry(entry_id=stable_id(url), url=url, link=url, guid=url,
                             feed_url=f"http://site{h:02d}.test:{port}/feed",
                             source=f"site{h:02d}", title="", summary="", content="",
                             published_at=None, authors=(), categories=(),
                             language_hint=None, topic_hint=None, fetched_at=NOW))
    return out


def run_dofn(fn: FetchPagesFn, todo: list[Entry]) -> tuple[int, int, int]:
    """Drives the DoFn as a runner would; returns (articles, errors, limiter peak)."""
    articles = errors = 0

    def count(outputs) -> None:
        nonlocal articles, errors
        for out in outputs or ():
            value = getattr(out, "value", out)
            if isinstance(value, beam.pvalue.TaggedOutput):
                value = value.value
            inner = getattr(value, "value", value)
            if isinstance(inner, Article):
                articles += 1
            else:
                errors += 1

    fn.setup()
    try:
        fn.start_bundle()
        for entry in todo:
            count(fn.process(entry, timestamp=0, window=beam.window.GlobalWindow()))
        count(fn.finish_bundle())
        peak = max(fn._fetcher.limiter.peak.values())
    finally:
        fn.teardown()
    return articles, errors, peak


def run_fetcher(policy: FetchPolicy, threads: int, todo: list[Entry]) -> tuple[int, int, int]:
    """Fetches only; returns (responses, failures, limiter peak)."""
    fetcher = PoliteFetcher(policy, threads)
    try:
        futures = [fetcher.submit(e.url) for e in todo]
        failed = sum(1 for f in futures if f.exception() is not None)
        return len(futures) - failed, failed, max(fetcher.limiter.peak.values())
    finally:
        fetcher.close()


def run_pipeline(policy: FetchPolicy, threads: int, todo: list[Entry]) -> tuple[int, int]:
    """Runs FetchArticles in a Beam pipeline; returns (pages fetched, pages failed)."""
    from pipelines.ingest import counters

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(todo) | FetchArticles(policy, threads)
    result = pipeline.run()
    result.wait_until_finish()
    c = counters(result)
    return c.get("pages_fetched", 0), c.get("pages_failed", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--delays", default="0.25,1.0",
                        help="Comma-separated per-host delays to measure.")
    parser.add_argument("--mode", choices=["dofn", "pipeline", "fetcher", "all"], default="all")
    args = parser.parse_args(argv)
    print("command: .venv/bin/python bench/bench_fetch.py " + " ".join(sys.argv[1:]))
    print(f"{args.pages} pages over {args.hosts} hosts, {args.latency * 1000:.0f} ms per "
          f"response, per-host concurrency {args.concurrency}, {args.threads} threads")
    for delay in [float(d) for d in args.delays.split(",")]:
        modes = ["fetcher", "dofn", "pipeline"] if args.mode == "all" else [args.mode]
        for mode in modes:
            with server_process(args.latency) as (port, stats):
                policy = FetchPolicy(
                    host_overrides=tuple((f"site{h:02d}.test", "127.0.0.1")
                                         for h in range(args.hosts)),
                    per_host_concurrency=args.concurrency, per_host_delay=delay)
                todo = entries(port, args.hosts, args.pages)
                start = time.monotonic()
                if mode == "dofn":
                    ok, failed, limiter_peak = run_dofn(
                        FetchPagesFn(policy, args.threads), todo)
                elif mode == "fetcher":
                    ok, failed, limiter_peak = run_fetcher(policy, args.threads, todo)
                else:
                    ok, failed = run_pipeline(policy, args.threads, todo)
                    limiter_peak = None
                elapsed = time.monotonic() - start
            server_peak = max(stats["peak"].values())
            bound = args.hosts / delay if delay else float("inf")
            line = (f"delay {delay:>4} s  {mode:<8}  {len(todo)} pages in {elapsed:6.2f} s = "
                    f"{len(todo) / elapsed:6.1f} pages/s  (delay bound {bound:.0f}/s)  "
                    f"server peak per host {server_peak}  requests {stats['requests']} "
                    f"(pages {stats['pages']})")
            line += f"  ok {ok} failed {failed}"
            if limiter_peak is not None:
                line += f"  limiter peak {limiter_peak}"
            print(line, flush=True)
            if server_peak > args.concurrency:
                print(f"  LIMIT EXCEEDED: {server_peak} > {args.concurrency}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
