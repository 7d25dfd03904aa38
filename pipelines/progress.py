"""Running counts of a local run, shown on the console while the pipeline works.

Beam's local runners give no metrics until a pipeline has finished, and in
``--direct_running_mode multi_processing`` the DoFns run in other processes. So counting
steps (:class:`CountProgress`, a pass-through ``ParDo`` after each stage) keep their counts
per worker process and write them, at most twice a second and at the end of every
bundle, to one small JSON file per process in a local folder. The launcher's
:class:`ProgressReporter` sums those files and prints:

- on a terminal, one live line rewritten in place::

      progress: feeds 7 of 8 with entries, 1 failed | entries 30 | pages 28 fetched,
      2 failed | articles 26, duplicates 3        (one line on the terminal)

- when stderr is piped, the same line as plain text whenever the counts changed and at
  least ``interval`` seconds passed (default 10), and always once at the end.

Only local runners are reported (the folder must be shared by the workers); on Dataflow,
Flink or Spark read the runner's own UI. The counts are progress only: the run summary
is built from the files the run published, not from these.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import apache_beam as beam

STAGES = ("entries", "source_errors", "pages_fetched", "pages_failed", "articles",
          "duplicates")
_FLUSH_EVERY = 0.5  # seconds between two writes of a process's counts

_lock = threading.Lock()
_counts: dict[str, collections.Counter] = {}  # folder -> counts of this process
_feeds: dict[str, dict[str, set]] = {}  # folder -> {"ok"|"failed": feed URLs}
_flushed: dict[str, float] = {}
_token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _flush(folder: str, force: bool = False) -> None:
    now = time.monotonic()
    with _lock:
        if not force and now - _flushed.get(folder, 0.0) < _FLUSH_EVERY:
            return
        _flushed[folder] = now
        data = {"counts": dict(_counts.get(folder, {})),
                "feeds": {k: sorted(v) for k, v in _feeds.get(folder, {}).items()}}
    path = os.path.join(folder, f"{_token}.json")
    tmp = f"{path}.tmp"
    with contextlib.suppress(OSError):  # progress must never fail a run
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)


class CountProgressFn(beam.DoFn):
    """Counts the elements passing through under ``what``; yields them unchanged."""

    def __init__(self, folder: str, what: str):
        self._folder = folder
        self._what = what

    def process(self, element: Any):
        with _lock:
            _counts.setdefault(self._folder, collections.Counter())[self._what] += 1
            feed = getattr(element, "feed_url", None)
            if feed and self._what in ("entries", "source_errors"):
                level = getattr(element, "level", "entry")
                kind = "failed" if self._what == "source_errors" and level == "feed" else "ok"
                if kind == "failed" or self._what == "entries":
                    _feeds.setdefault(self._folder, {}).setdefault(kind, set()).add(feed)
        _flush(self._folder)
        yield element

    def finish_bundle(self):
        _flush(self._folder, force=True)


class CountProgress(beam.PTransform):
    """A pass-through step that counts its elements for the progress line."""

    def __init__(self, folder: str, what: str):
        super().__init__()
        self._folder = folder
        self._what = what

    def expand(self, pcoll):
        return pcoll | beam.ParDo(CountProgressFn(self._folder, self._what))


def read_progress(folder: str) -> dict[str, Any]:
    """The counts of every process that reported into ``folder``, summed."""
    counts: collections.Counter = collections.Counter()
    feeds: dict[str, set] = {"ok": set(), "failed": set()}
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue  # being replaced right now; the next read has it
        counts.update(data.get("counts", {}))
        for kind, urls in data.get("feeds", {}).items():
            feeds.setdefault(kind, set()).update(urls)
    return {"counts": counts, "feeds": feeds}


def render(progress: dict[str, Any], feeds_listed: int | None = None) -> str:
    """One progress line."""
    c = progress["counts"]
    ok = progress["feeds"].get("ok", set())
    failed = progress["feeds"].get("failed", set())
    parts = []
    if feeds_listed:
        parts.append(f"feeds {len(ok)} of {feeds_listed} with entries, {len(failed)} failed")
    parts.append(f"entries {c['entries']}")
    parts.append(f"pages {c['pages_fetched']} fetched, {c['pages_failed']} failed")
    parts.append(f"articles {c['articles']}, duplicates {c['duplicates']}")
    return " | ".join(parts)


class ProgressReporter:
    """Prints the progress line of a run on ``stream`` until stopped (a context manager).

    ``live``: rewrite one line in place (default: when ``stream`` is a terminal).
    ``clock``: monotonic seconds (tests inject one); ``interval``: seconds between two
    plain lines when not live.
    """

    def __init__(self, feeds_listed: int | None = None, stream=None, live: bool | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 prefix: str = "progress: "):
        self.folder = tempfile.mkdtemp(prefix="newsbeam-progress-")
        self._feeds_listed = feeds_listed
        self._stream = stream if stream is not None else sys.stderr
        self._live = (self._stream.isatty() if live is None else live)
        self._interval = interval
        self._clock = clock
        self._prefix = prefix
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_line = ""
        self._last_at: float | None = None
        self.lines: list[str] = []

    def tick(self, final: bool = False) -> None:
        """Reads the counts and prints a line if one is due."""
        progress = read_progress(self.folder)
        if not final and not any(progress["counts"].values()):
            return  # nothing to say yet
        line = render(progress, self._feeds_listed)
        now = self._clock()
        if self._live:
            if line != self._last_line or final:
                self._stream.write("\r\033[K" + self._prefix + line + ("\n" if final else ""))
                self._stream.flush()
        elif final or (line != self._last_line and (
                self._last_at is None or now - self._last_at >= self._interval)):
            if final and line == self._last_line and self._last_at is not None:
                return
            self._stream.write(self._prefix + line + "\n")
            self._stream.flush()
            self._last_at = now
        else:
            return
        self._last_line = line
        self.lines.append(line)

    def _loop(self) -> None:
        while not self._stop.wait(0.5 if self._live else 1.0):
            self.tick()

    def __enter__(self) -> ProgressReporter:
        self._thread = threading.Thread(target=self._loop, name="newsbeam-progress",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc[0] is None:
            self.tick(final=True)
        elif self._live and self._last_line:
            self._stream.write("\n")
        shutil.rmtree(self.folder, ignore_errors=True)


WORKER_NOISE = ("INFO:", "apitools not found", "Discarding unparseable args",
                "No semi_persistent_directory", "Discarding invalid overrides")
"""Lines that SDK worker processes print on the launcher's stderr at start and stop (they
configure their own logging at INFO): their start-up notices, not the run's news."""


@contextlib.contextmanager
def filtered_stderr(noise: tuple[str, ...] = WORKER_NOISE):
    """Passes what child processes write on stderr (file descriptor 2) through a filter
    that drops lines holding any of ``noise``, for the duration of the block; yields a
    text stream on the real stderr for this process's own console output.

    Beam's multi-processing mode starts its SDK workers as child processes that inherit
    descriptor 2 and log to it at INFO; no pipeline option reaches their first lines.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as lines:
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if not any(n in line for n in noise):
                    with contextlib.suppress(OSError):
                        os.write(saved, raw)

    thread = threading.Thread(target=pump, name="newsbeam-stderr-filter", daemon=True)
    thread.start()
    try:
        yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer held here: the pump ends
        thread.join(timeout=5.0)
        real.close()
        os.close(saved)
