"""The progress line: counts written per process, summed, printed live or as plain lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.progress import (
    CountProgress,
    CountProgressFn,
    ProgressReporter,
    read_progress,
)
from tests.test_watch import START
from transforms.util import error_record


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Item:
    def __init__(self, feed_url: str, level: str = "entry"):
        self.feed_url = feed_url
        self.level = level


def _count(folder: str, what: str, items) -> None:
    fn = CountProgressFn(folder, what)
    for item in items:
        list(fn.process(item))
    fn.finish_bundle()


def test_piped_lines_are_plain_throttled_and_end_with_the_final_counts():
    stream, clock = io.StringIO(), Clock()
    reporter = ProgressReporter(feeds_listed=3, stream=stream, live=False, interval=10,
                                clock=clock)
    try:
        reporter.tick()
        assert stream.getvalue() == ""  # nothing counted yet: nothing printed
        _count(reporter.folder, "entries", [Item("f1"), Item("f1"), Item("f2")])
        reporter.tick()
        _count(reporter.folder, "pages_fetched", [Item("f1")])
        clock.t = 5.0
        reporter.tick()  # changed, but within the interval: no line
        clock.t = 10.0
        reporter.tick()
        _count(reporter.folder, "source_errors", [Item("f3", level="feed")])
        _count(reporter.folder, "articles", [Item("f1")])
        reporter.tick(final=True)
        reporter.tick(final=True)  # the same final line is not repeated
    finally:
        reporter.__exit__(None, None, None)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines == [
        "progress: feeds 2 of 3 with entries, 0 failed | entries 3 | pages 0 fetched, "
        "0 failed | articles 0, duplicates 0",
        "progress: feeds 2 of 3 with entries, 0 failed | entries 3 | pages 1 fetched, "
        "0 failed | articles 0, duplicates 0",
        "progress: feeds 2 of 3 with entries, 1 failed | entries 3 | pages 1 fetched, "
        "0 failed | articles 1, duplicates 0",
    ]
    assert not os.path.exists(reporter.folder)


def test_live_line_is_rewritten_in_place_and_ended_once():
    stream = io.StringIO()
    with ProgressReporter(stream=stream, live=True, clock=Clock()) as reporter:
        _count(reporter.folder, "entries", [Item("f1")])
        reporter.tick()
        _count(reporter.folder, "entries", [Item("f1")])
    text = stream.getvalue()
    assert text.startswith("\r\033[K") and text.endswith("\n") and text.count("\n") == 1
    assert text.rsplit("\r\033[K", 1)[1] == ("progress: entries 2 | pages 0 fetched, 0 failed | "
                                             "articles 0, duplicates 0\n")


def test_counting_steps_pass_elements_through_in_a_pipeline(tmp_path):
    folder = str(tmp_path)
    error = error_record("u", "https://f/feed", "feed", "fetch_feed", "http_404", "gone", 404,
                         1, START)
    with TestPipeline() as p:
        out = (p | beam.Create([error]) | CountProgress(folder, "source_errors"))
        assert_that(out, equal_to([error]))
    counts = read_progress(folder)
    assert counts["counts"]["source_errors"] == 1
    assert counts["feeds"]["failed"] == {"https://f/feed"}


def test_child_processes_lose_only_their_noise_on_stderr():
    code = (
        "import subprocess, sys\n"
        "from pipelines.progress import filtered_stderr\n"
        "sys.stderr.write('START\\n')\n"
        "with filtered_stderr() as real:\n"
        "    subprocess.run([sys.executable, '-c', \"import sys; "
        "sys.stderr.write('INFO:__main__:Logging handler created.\\\\n'); "
        "sys.stderr.write('WARNING:root:apitools not found, and bigquery\\\\n'); "
        "sys.stderr.write('a real problem\\\\n')\"])\n"
        "    real.write('own line\\n')\n"
        "sys.stderr.write('after\\n')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    after_start = proc.stderr.split("START\n", 1)[1]
    assert sorted(after_start.splitlines()) == ["a real problem", "after", "own line"]
