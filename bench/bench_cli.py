"""Start-up time of ``newsbeam --help`` / ``newsbeam ingest --help``, and the console lines
of a default demo run, for this checkout and an earlier revision side by side.

    nice .venv/bin/python bench/bench_cli.py --repeats 7            # help timings
    nice .venv/bin/python bench/bench_cli.py --repeats 0 --demo     # demo console lines
    nice .venv/bin/python bench/bench_cli.py --repeats 0 --demo \
        --demo-args "--direct_running_mode multi_processing --direct_num_workers 2"

The earlier revision (``--base-rev``, default ``cb08b4b``, the release before the
entry-layer redesign) is exported with ``git archive`` into a temporary folder and run
with this environment's Python and ``PYTHONPATH`` pointing at it; this checkout runs the
same way, so both pay the same interpreter start-up. Runs alternate (base, new, base, ...)
so that load on a shared machine hits both alike. Prints median, min and max wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, folder: Path) -> Path:
    """The tree of ``rev`` under ``folder``."""
    archive = folder / "base.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "tree", filter="data")
    return folder / "tree"


def timed(tree: Path, argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t0, proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-rev", default="cb08b4b")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--demo", action="store_true",
                        help="Also count the console lines of one default demo run each.")
    parser.add_argument("--demo-args", default="",
                        help="Options added to both demo runs, e.g. '--direct_running_mode "
                             "multi_processing --direct_num_workers 2'.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-cli-") as tmp:
        trees = {"before": export(args.base_rev, Path(tmp)), "after": ROOT}
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        for command in (["--help"], ["ingest", "--help"]):
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    seconds, proc = timed(tree, command)
                    assert proc.returncode == 0, proc.stderr
                    times[name].append(seconds)
            if args.repeats:
                line = " | ".join(
                    f"{name}: median {statistics.median(t):.2f} s (min {min(t):.2f}, "
                    f"max {max(t):.2f})" for name, t in times.items())
                print(f"newsbeam {' '.join(command)} x{args.repeats}: {line}")
        if args.demo:
            for name, tree in trees.items():
                out = Path(tmp) / f"demo-{name}"
                seconds, proc = timed(tree, ["demo", "--output", str(out),
                                             *args.demo_args.split()])
                lines = proc.stdout.count("\n") + proc.stderr.replace("\r", "\n").count("\n")
                beam = sum(1 for line in proc.stderr.splitlines()
                           if "apitools" in line or "INFO" in line
                           or "Discarding unparseable" in line)
                print(f"demo ({name}): exit {proc.returncode}, {seconds:.1f} s, console lines "
                      f"{lines} (stdout {proc.stdout.count(chr(10))}, stderr "
                      f"{proc.stderr.count(chr(10))}), Beam notices {beam}")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
