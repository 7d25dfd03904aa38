"""How often does a demo-sized run end abnormally? Counts the exit codes of many runs.

Each run is ``newsbeam demo --story-similarity lexical`` (or ``multilingual``, or the two
in turn): the bundled corpus served on 127.0.0.1, the real pipeline, a fresh output
folder, in its own process, with Python's fault handler on, so an abort prints the Python
stack of every thread. ``--parallel 2`` runs two at a time, which loads this 2-core machine
the way a busy host does::

    nice .venv/bin/python bench/bench_exits.py --runs 200 --parallel 2 --similarity mixed

Prints one line per run and a final count per exit code; the stderr of every run that did
not exit 0 is kept under ``--log``.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(i: int, work: Path, log: Path, similarity: str) -> tuple[int, int, bool, float]:
    """Runs the demo once; returns (index, exit code, accounting line seen, seconds)."""
    out = work / f"run-{i:04d}"
    if similarity == "mixed":
        similarity = ("lexical", "multilingual")[i % 2]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--output", str(out),
         "--story-similarity", similarity],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    ok_line = "accounting OK" in proc.stdout
    if proc.returncode != 0:
        (log / f"run-{i:04d}-rc{proc.returncode}.log").write_text(
            proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    return i, proc.returncode, ok_line, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--log", default=None, help="Folder for logs of abnormal runs.")
    parser.add_argument("--similarity", default="lexical",
                        choices=["lexical", "multilingual", "mixed"],
                        help="Story similarity of the runs; mixed alternates the two.")
    args = parser.parse_args(argv)
    log = Path(args.log or tempfile.mkdtemp(prefix="newsbeam-exits-log-"))
    log.mkdir(parents=True, exist_ok=True)
    codes: collections.Counter = collections.Counter()
    ok_lines = 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="newsbeam-exits-") as tmp, \
            ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(one_run, i, Path(tmp), log, args.similarity)
                   for i in range(args.runs)]
        for f in futures:
            i, rc, ok_line, seconds = f.result()
            codes[rc] += 1
            ok_lines += ok_line
            load = os.getloadavg()[0]
            print(f"run {i:4d}: exit {rc:4d} accounting-line {ok_line} {seconds:5.1f} s "
                  f"load {load:.2f}", flush=True)
    total = sum(codes.values())
    abnormal = total - codes.get(0, 0)
    print(f"{total} runs in {time.monotonic() - t0:.0f} s (parallel {args.parallel}): "
          f"exit codes {dict(sorted(codes.items()))}; abnormal {abnormal}; "
          f"'accounting OK' printed by {ok_lines}; logs of abnormal runs in {log}")
    return 0 if abnormal == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
