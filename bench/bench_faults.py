"""Fault injection: concurrent runs into one folder, SIGKILLs, recovery, compared with a
clean run row for row.

The demo corpus is served once on 127.0.0.1 (one port, so every run reads the same
inputs). A clean run writes the reference folder. Then, round after round, ``--runs``
``newsbeam ingest`` processes start together into one other folder (``--lock-wait``: they
queue for the writer lease) and one of them is killed with SIGKILL: at a random moment
(mostly the lease holder: fetching, in the story stage; sometimes one waiting for the
lease) or, every ``--publish-every`` rounds,
the moment the lease holder's publish intent appears (half-way through its publish). The
survivors run to the end. A last ordinary run recovers whatever is left, and every table
is compared with the clean run's, row for row (time columns left out)::

    nice .venv/bin/python bench/bench_faults.py --rounds 6 --runs 3 [--hostile]

``--hostile`` adds the hostile inputs of the end-to-end tests to every run: feeds with
forbidden character references, relative and broken links, odd dates, wrong JSON types,
garbage and binary bodies, a dead link, a broken OPML file and a hostile backfill file.

Prints each kill (where it landed) and the rows lost and doubled per table (target 0, 0).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.demo.run import demo_feeds_file  # noqa: E402
from pipelines.demo.server import SiteServer  # noqa: E402

TABLES = ("articles", "duplicates", "errors")
TIME_COLUMNS = {"fetched_at", "detected_at", "occurred_at", "date"}
STORY_COLUMNS = {"story_id", "is_story_lead", "story_similarity"}
"""Compared apart: an article with no usable date is ordered by its fetch time, which
differs from run to run, so the story of such an article (and which article leads it) may
differ between two clean runs too."""


def ingest(feeds: str, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "ingest", "--feeds", feeds,
            "--output", str(out), "--allow-private-network", "--per-host-delay", "0",
            "--story-similarity", "lexical", "--lock-wait", "900", *extra]


def hostile_inputs(stack: contextlib.ExitStack, folder: Path) -> tuple[str, ...]:
    """Serves the hostile feed corpus of the end-to-end tests and writes their hostile
    backfill file and broken OPML file; returns the ingest arguments that read them."""
    from pipelines.demo.server import SiteServer
    from tests.test_hostile_e2e import _backfill, _build_corpus

    server = stack.enter_context(SiteServer(root=None))
    listing, _, _ = _build_corpus(server, folder)
    backfill, _ = _backfill(folder)
    broken = folder / "broken.opml"
    broken.write_text("this is not XML", encoding="utf-8")
    return ("--feeds", str(listing), "--feeds", str(broken), "--articles", str(backfill))


def rows(out: Path, table: str) -> collections.Counter:
    folder = out / table
    if not folder.exists():
        return collections.Counter()
    t = ds.dataset(str(folder), format="parquet", partitioning="hive").to_table()
    keep = [c for c in t.column_names if c not in TIME_COLUMNS | STORY_COLUMNS]
    return collections.Counter(tuple(map(repr, r.values())) for r in t.select(keep).to_pylist())


def stories(out: Path) -> dict[str, tuple]:
    """article_id → its story fields."""
    folder = out / "articles"
    if not folder.exists():
        return {}
    t = ds.dataset(str(folder), format="parquet", partitioning="hive").to_table()
    return {r["article_id"]: (r["story_id"], r["is_story_lead"]) for r in t.to_pylist()}


def phase_of(out: Path, run_pid: int, holder_pid: int | None) -> str:
    """Where a kill landed, from what the folder shows at that moment."""
    if holder_pid != run_pid:
        return "waiting for the lease"
    if glob.glob(str(out / "_runs" / "*.intent.json")):
        return "publish"
    if glob.glob(str(out / "_staging" / "*" / "*.parquet")):
        return "pipeline, rows staged"
    # Staging files appear only as bundles finish, at the end of this small pipeline:
    # fetching, extraction and the story stage are all "nothing staged yet".
    return "pipeline (fetch, extract, stories), nothing staged yet"


def holder(out: Path) -> int | None:
    try:
        return json.loads((out / "_lock.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3, help="Concurrent runs per round.")
    parser.add_argument("--publish-every", type=int, default=2,
                        help="Every Nth round kills the lease holder inside its publish.")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--hostile", action="store_true",
                        help="Every run also reads the hostile feed corpus, source file and "
                             "backfill file of tests/test_hostile_e2e.py.")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    kills: list[str] = []
    codes: collections.Counter = collections.Counter()
    t_start = time.monotonic()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(SiteServer())
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="newsbeam-faults-"))
        work = Path(tmp)
        feeds = demo_feeds_file(server.base_url, tmp)
        extra = hostile_inputs(stack, work) if args.hostile else ()
        clean, faulty = work / "clean", work / "faulty"
        t0 = time.monotonic()
        subprocess.run(ingest(feeds, clean, extra), cwd=ROOT, check=True, capture_output=True)
        clean_seconds = time.monotonic() - t0
        print(f"clean run: {clean_seconds:.1f} s", flush=True)
        for r in range(args.rounds):
            procs = [subprocess.Popen(ingest(feeds, faulty, extra), cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for _ in range(args.runs)]
            at_publish = (r + 1) % args.publish_every == 0
            victim, where = None, "none"
            deadline = time.monotonic() + (10 * clean_seconds if at_publish
                                           else rng.uniform(0.2, 1.2) * clean_seconds)
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                if at_publish and glob.glob(str(faulty / "_runs" / "*.intent.json")):
                    pid = holder(faulty)
                    victim = next((p for p in procs if p.pid == pid and p.poll() is None),
                                  None)
                    if victim is not None:
                        break
                time.sleep(0.002 if at_publish else 0.05)
            else:
                # The run holding the lease is the one fetching, in its story stage or
                # publishing; the others wait (a kill there is tried too, less often).
                alive = [p for p in procs if p.poll() is None]
                running = [p for p in alive if p.pid == holder(faulty)]
                pool = running if running and rng.random() < 0.8 else alive
                victim = rng.choice(pool) if pool else None
            if victim is not None:
                where = phase_of(faulty, victim.pid, holder(faulty))
                victim.send_signal(signal.SIGKILL)
                kills.append(where)
            try:
                for p in procs:
                    p.wait(timeout=3600)
            finally:
                for p in procs:  # never leave a run behind if the bench itself stops
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            for p in procs:
                if p is not victim:
                    codes[p.returncode] += 1
            print(f"round {r + 1}: killed {'one run' if victim else 'nothing'} ({where}); "
                  f"survivors' exit codes {[p.returncode for p in procs if p is not victim]}",
                  flush=True)
        final = subprocess.run(ingest(feeds, faulty, extra), cwd=ROOT, capture_output=True,
                               text=True)
        codes[final.returncode] += 1
        lost = doubled = 0
        for table in TABLES:
            want, got = rows(clean, table), rows(faulty, table)
            t_lost = sum((want - got).values())
            t_doubled = sum((got - want).values())
            lost += t_lost
            doubled += t_doubled
            print(f"  {table}: clean {sum(want.values())} rows, after faults and recovery "
                  f"{sum(got.values())}; lost {t_lost}, doubled {t_doubled}")
        want_s, got_s = stories(clean), stories(faulty)
        moved = sum(1 for a, v in want_s.items() if a in got_s and got_s[a] != v)
        print(f"  story fields differing from the clean run: {moved} article(s) (compared "
              "apart, see STORY_COLUMNS)")
        leftovers = [p for p in ("_staging", "_lock.json") if (faulty / p).exists()]
        leftovers += glob.glob(str(faulty / "_runs" / "*.intent.json"))
    by_phase = collections.Counter(kills)
    print(f"{len(kills)} kills ({dict(by_phase)}); exit codes of the other runs "
          f"{dict(codes)}; rows lost {lost}, doubled {doubled}; leftovers {leftovers}; "
          f"{time.monotonic() - t_start:.0f} s")
    return 0 if lost == doubled == 0 and not leftovers and set(codes) == {0} else 1


if __name__ == "__main__":
    raise SystemExit(main())
