"""The pipelines on Beam's Prism runner, a real portable runner (``pytest -m runners``).

Prism is built by ``deploy/local-runners.sh`` (``make test`` and ``.ci/run`` run it first).
Without the binary these tests fail with the command that builds it: they are never
skipped.

* The demo corpus and a backfill file, in batch, give the same rows on Prism as on the
  FnApiRunner, table for table.
* The unbounded pipeline (``--streaming --stop-after``) on Prism publishes each window while
  the job still runs: the feed server holds a later poll until the earlier windows' files
  and manifests are there, and reads them back before it lets the job go on. Every
  window's accounting closes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines.demo.run import demo_feeds_file
from pipelines.demo.server import SiteServer
from pipelines.ingest import run
from pipelines.runners import prism_for_run, require_prism
from pipelines.streaming import run as run_streaming
from tests.test_portability import _PARAGRAPHS, ARTICLE_COLUMNS, _outputs
from tests.test_streaming import dated_rss, story_page

pytestmark = [pytest.mark.runners, pytest.mark.slow]

# Bound on waiting for a window to be published (never reached when all is well).
PUBLISH_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def prism() -> list[str]:
    return ["--runner=PrismRunner", f"--prism_location={require_prism()}"]


def _ingest(args: list[str], output: Path, run_id: str, *runner: str):
    _, summary = run([*args, "--output", str(output), "--run-id", run_id,
                      "--fetch-threads", "4", *runner], quiet=True)
    return summary, _outputs(str(output), run_id)


# -- batch: the same rows on Prism as on the FnApiRunner --------------------------------------

@pytest.fixture(scope="module")
def demo_site(tmp_path_factory):
    with SiteServer() as server:
        folder = tmp_path_factory.mktemp("demo-feeds")
        yield ["--feeds", demo_feeds_file(server.base_url, str(folder)),
               "--allow-private-network", "--per-host-delay", "0.05",
               "--story-similarity", "lexical"]


def test_demo_on_prism_gives_the_fnapi_rows(demo_site, prism, tmp_path):
    fn_summary, fn_rows = _ingest(demo_site, tmp_path / "fn", "fn", "--runner=FnApiRunner")
    pr_summary, pr_rows = _ingest(demo_site, tmp_path / "prism", "prism", *prism)
    # The reference is the demo's known result, or equality with it proves little.
    assert fn_summary.balanced, fn_summary.render()
    assert (fn_summary.entries_read, fn_summary.articles, fn_summary.duplicates,
            fn_summary.entry_errors) == (30, 26, 3, 1)
    assert pr_summary.balanced, pr_summary.render()
    for table in ("articles", "duplicates", "errors"):
        assert pr_rows[table] == fn_rows[table], table
    assert len(pr_rows["articles"]) == 26
    # Counters come back through Prism's metrics too: the summary is the same.
    assert (pr_summary.entries_read, pr_summary.articles, pr_summary.duplicates,
            pr_summary.entry_errors) == (30, 26, 3, 1)
    # The run started its own Prism and stopped it: no Prism process is left behind.
    assert _prism_children() == []


def _prism_children() -> list[int]:
    """Processes named prism whose parent is this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, rest = f.read().split(") ", 1)
        except (OSError, ValueError):
            continue
        if name.endswith("(prism") and int(rest.split()[1]) == os.getpid():
            found.append(int(entry))
    return found


def test_backfill_on_prism_gives_the_fnapi_rows(prism, tmp_path):
    lines = [json.dumps({"url": f"https://{name}.example/{name}", "title": name.title(),
                         "text": " ".join(paragraphs),
                         "published": "2024-11-23T08:00:00+00:00"})
             for name, paragraphs in _PARAGRAPHS.items()]
    lines.append(json.dumps({"url": "https://ferry.example/ferry?utm_source=x",
                             "text": " ".join(_PARAGRAPHS["ferry"])}))  # same canonical URL
    lines += ['{"url": "https://x.example/no-text"}', "not json"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--articles", str(src), "--story-similarity", "lexical"]
    fn_summary, fn_rows = _ingest(args, tmp_path / "fn", "fn", "--runner=FnApiRunner")
    pr_summary, pr_rows = _ingest(args, tmp_path / "prism", "prism", *prism)
    assert (fn_summary.entries_read, fn_summary.articles, fn_summary.duplicates,
            fn_summary.entry_errors) == (8, 5, 1, 2)
    assert fn_summary.balanced and pr_summary.balanced, pr_summary.render()
    for table in ("articles", "duplicates", "errors"):
        assert pr_rows[table] == fn_rows[table], table
    languages = sorted(r[ARTICLE_COLUMNS.index("language")] for r in pr_rows["articles"])
    assert languages == ["de", "de", "en", "en", "en"]


# -- streaming: windows published while the job runs -----------------------------------------

POLL_INTERVAL = 3.0
FIRST = [("/w/ferry.html", "Ferry", -30), ("/w/derby.html", "Derby", -20)]
SECOND = [("/w/chips.html", "Chips", -10), ("/w/markt.html", "Markt", -5),
          ("/w/missing.html", "Missing", -1)]
PAGES = {"/w/ferry.html": "ferry", "/w/derby.html": "derby", "/w/chips.html": "chips",
         "/w/markt.html": "markt"}
FEED = "/w/feed.xml"


class HoldingSite(SiteServer):
    """Serves the feed in versions, one per poll. Poll ``hold_at`` (1-based) is answered
    only after ``on_hold()`` returns: the job cannot end while that looks at what it has
    published so far (the job waits for this very response)."""

    def __init__(self, root, versions: list[str], hold_at: int, on_hold):
        super().__init__(root)
        self.versions = versions
        self.hold_at = hold_at
        self.on_hold = on_hold
        self.polls = 0

    def _override_for(self, target, path):
        if path != FEED:
            return super()._override_for(target, path)
        with self._lock:
            self.polls += 1
            n = self.polls
        if n == self.hold_at:
            self.on_hold()
        body = self.versions[min(n, len(self.versions)) - 1]
        return 200, {"Content-Type": "application/rss+xml"}, body.encode()


def _window_manifests(out: Path, run_id: str) -> dict[tuple[int, int], dict]:
    """The commit manifests of the unbounded run, by window (start, end) in seconds."""
    windows: dict[tuple[int, int], dict] = {}
    for path in (out / "_runs").glob(f"{run_id}-*-*-*.json"):
        start, end, table = path.stem[len(run_id) + 1:].split("-")
        tables = json.loads(path.read_text())["tables"]
        windows.setdefault((int(start), int(end)), {})[table] = tables[table]
    return windows


def _window_rows(out: Path, files: list) -> list[dict]:
    rows = []
    for rel, count in files:
        t = pq.read_table(out / rel)
        assert t.num_rows == count, rel
        rows += t.to_pylist()
    return rows


def _wait_for(condition, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def test_streaming_on_prism_publishes_windows_while_running(prism, tmp_path):
    root = tmp_path / "site"
    for path, key in PAGES.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(
            story_page(key.title(), " ".join(_PARAGRAPHS[key])), encoding="utf-8")
    out = tmp_path / "out"
    versions = [dated_rss(FIRST), dated_rss(FIRST + SECOND)]
    seen: dict = {}

    def look_while_running():
        """Runs while the job waits for the third poll: both earlier polls' windows must
        be published and readable by then."""
        try:
            seen["published"] = _wait_for(
                lambda: sum("articles" in m for m in _window_manifests(out, "live").values())
                >= 2, PUBLISH_TIMEOUT)
            seen["windows"] = []
            for (start, end), tables in sorted(_window_manifests(out, "live").items()):
                rows = {t: _window_rows(out, files) for t, files in tables.items()}
                seen["windows"].append((end - start, {
                    t: sorted(r["url"].rsplit("/", 1)[-1] for r in rs)
                    for t, rs in rows.items()}))
        except Exception as e:  # reported by the test below, after the job has ended
            seen["error"] = e

    with HoldingSite(root, versions, hold_at=3, on_hold=look_while_running) as server:
        _, summary = run_streaming(
            ["--feeds", server.url(FEED), "--output", str(out), "--run-id", "live",
             "--allow-private-network", "--per-host-delay", "0.05",
             "--story-similarity", "lexical", "--streaming",
             "--poll-interval", str(POLL_INTERVAL),
             "--stop-after", str(2.5 * POLL_INTERVAL), *prism], quiet=True)
        assert server.polls >= 3
    assert "error" not in seen, seen.get("error")
    assert seen["published"], sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert all(length == POLL_INTERVAL for length, _ in seen["windows"])
    during = [tables for _, tables in seen["windows"]]
    # The first window holds the first poll's items, the second the second poll's; each
    # window's accounting closes (items in = articles + duplicates + entry errors).
    assert during[0]["articles"] == ["derby.html", "ferry.html"]
    assert during[1]["articles"] == ["chips.html", "markt.html"]
    assert during[1]["errors"] == ["missing.html"]
    for window, items in zip(during, (FIRST, SECOND), strict=True):
        entry_errors = window.get("errors", [])
        assert len(items) == (len(window["articles"]) + len(window.get("duplicates", []))
                              + len(entry_errors)), window
    assert summary.balanced, summary.render()
    assert (summary.entries_read, summary.articles, summary.entry_errors) == (5, 4, 1)
    # Nothing was published twice: every window's manifest, and no more files than those.
    final = _window_manifests(out, "live")
    listed = {rel for tables in final.values() for files in tables.values()
              for rel, _ in files}
    on_disk = {str(p.relative_to(out)) for t in ("articles", "duplicates", "errors")
               for p in (out / t).rglob("*.parquet")}
    assert listed == on_disk


def test_each_run_starts_and_stops_its_own_prism(prism):
    """The same options serve several runs (as in watch cycles): each gets a Prism of its
    own, and none is left running."""
    options = PipelineOptions(prism)
    endpoints = []
    for n in (3, 5):
        with prism_for_run(options) as run_options:
            endpoints.append(run_options.view_as(PortableOptions).job_endpoint)
            with beam.Pipeline(options=run_options) as p:
                assert_that(p | beam.Create(range(n)) | beam.combiners.Count.Globally(),
                            equal_to([n]))
        assert options.view_as(PortableOptions).job_endpoint is None
        assert _prism_children() == []
    assert all(e and e.startswith("localhost:") for e in endpoints), endpoints
