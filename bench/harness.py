"""What the throughput benches (``bench_pipeline.py``, ``bench_runners.py``) share.

* :func:`synthetic_site`: the generated site of ``synthetic_site.py``, served from memory
  by a process of its own on 127.0.0.1 for as long as the ``with`` block lasts;
* :func:`site_arguments` and :func:`child_command`: the options both benches take (the
  site's size, rounds, modes) and the command line that runs one measurement in a fresh
  process (so its memory and start-up are its own);
* :func:`ingest_site`: the batch run both benches time, ``newsbeam ingest`` over the
  site's feeds with the politeness limits lifted;
* :func:`run_sampled`: a command run to its end, with its wall time and the peak resident
  memory of its whole process tree (launcher, SDK workers, a Prism process), sampled
  from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def synthetic_site(feeds: int, per_feed: int) -> Iterator[str]:
    """Serves ``feeds`` x ``per_feed`` generated articles; yields the site's base URL."""
    server = subprocess.Popen(
        [sys.executable, str(HERE / "synthetic_site.py"), "--feeds", str(feeds),
         "--per-feed", str(per_feed)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.stdin.close()  # the site serves until its stdin closes
        server.wait(timeout=10)


def site_arguments(ap: argparse.ArgumentParser, rounds: int, modes: str) -> None:
    """Adds the site's size, the rounds, the modes and the hidden child options."""
    ap.add_argument("--feeds", type=int, default=20)
    ap.add_argument("--per-feed", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--modes", default=modes)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)


def child_command(script: str, mode: str, base: str, feeds: int,
                  similarity: str) -> list[str]:
    """The command line of one measurement: ``script --child MODE`` over the site."""
    return [sys.executable, script, "--child", mode, "--base", base, "--feeds", str(feeds),
            "--similarity", similarity]


def ingest_site(base: str, feeds: int, out: str, similarity: str, extra: list[str]):
    """Ingests the site's ``feeds`` feeds into ``out/o`` in batch; returns the summary."""
    from pipelines.ingest import run

    feed_file = os.path.join(out, "feeds.txt")
    Path(feed_file).write_text("\n".join(f"{base}/outlet{f}/feed.xml" for f in range(feeds)))
    # One loopback host serves every page: politeness limits (2 requests, 1 s apart per
    # host by default) would measure the limiter, not the pipeline, so they are lifted.
    _, summary = run(["--feeds", feed_file, "--output", os.path.join(out, "o"),
                      "--allow-private-network", "--per-host-concurrency", "16",
                      "--per-host-delay", "0", "--story-similarity", similarity, *extra],
                     quiet=True)
    return summary


# -- process-tree memory -------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    kids, total, todo = _children(), 0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_sampled(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float]:
    """Runs ``cmd``; returns the process, its wall time and its tree's peak RSS in MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{err[-3000:]}")
    return result, seconds, peak / 2**20
