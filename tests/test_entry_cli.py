"""The ``newsbeam`` command as users run it: the console script in this environment, in a
subprocess, against a loopback site. Help per command, exit codes, progress lines when
piped, the quiet default console, and the JSON run summary read back against the Parquet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.demo.server import SiteServer
from tests.test_watch import make_site, rss
from transforms.sinks.publish import committed_files

NEWSBEAM = str(Path(sys.executable).parent / "newsbeam")
ROOT = Path(__file__).resolve().parent.parent


def newsbeam(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the installed console script with stdout and stderr piped."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return subprocess.run([NEWSBEAM, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


# -- help ------------------------------------------------------------------------------------

GROUP_TITLES = ("sources (", "fetching (", "stories (", "topics (", "output (",
                "continuous (", "Beam:")


@pytest.mark.parametrize("command", ["ingest", "watch"])
def test_help_of_a_command_shows_its_own_groups(command):
    proc = newsbeam(command, "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"usage: newsbeam {command}")
    for title in GROUP_TITLES:
        assert title in out, title
    for option in ("--feeds", "--output", "--fetch-threads", "--story-similarity",
                   "--topic-encoder", "--lock-wait", "--poll-interval", "--cycles",
                   "--stop-after", "--forget-after-days", "--feed-backoff", "--page-attempts",
                   "--log-level", "--runner"):
        assert option in out, option
    # Options appear under their own group: --poll-interval after the continuous title.
    assert out.index("\n  --poll-interval") > out.index("continuous (")
    assert out.index("\n  --story-threshold") > out.index("stories (")
    assert "apitools" not in proc.stderr and proc.stderr == ""


def test_top_level_help_lists_commands_and_exit_codes():
    proc = newsbeam("--help")
    assert proc.returncode == 0
    for word in ("ingest", "watch", "demo", "compact", "--version", "-v", "-q",
                 "--log-level", "Exit codes", "75"):
        assert word in proc.stdout, word
    demo = newsbeam("demo", "--help")
    assert demo.returncode == 0 and "--output DIR" in demo.stdout
    assert "continuous (" not in demo.stdout
    compact = newsbeam("compact", "--help")
    assert compact.returncode == 0 and "--target-size" in compact.stdout


def test_help_does_not_import_beam_or_trafilatura():
    code = ("import sys\n"
            "from pipelines.cli import build_parser\n"
            "build_parser().format_help()\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('apache_beam', 'trafilatura', 'pyarrow', 'transforms')]\n"
            "print(heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_version_and_usage_errors_exit_0_and_2(tmp_path):
    version = newsbeam("--version")
    assert version.returncode == 0 and version.stdout.startswith("newsbeam ")
    for argv, message in [
        (["frobnicate"], "invalid choice"),
        (["ingest", "--feeds", "https://a.example/rss", "--fetch-threads", "many",
          "--output", str(tmp_path)], "--fetch-threads"),
        (["ingest", "--feeds", "https://a.example/rss"], "--output DIR is required"),
        (["watch", "--feeds", "https://a.example/rss", "--output", str(tmp_path),
          "--cycles", "0"], "--cycles must be at least 1"),
        (["compact", str(tmp_path), "--bogus"], "unrecognized arguments"),
        (["--log-level", "LOUD", "ingest"], "--log-level"),
    ]:
        proc = newsbeam(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written


# -- runs end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("entry-site")
    make_site(tmp / "site")
    with SiteServer(tmp / "site") as server:
        # Outlet A lists a page that does not exist (one entry error); D is not a feed.
        server.set_file("/a/feed.xml", rss("Outlet A", [("/a/1.html", "a1"), ("/a/2.html", "a2"),
                                                        ("/a/9.html", "gone")]))
        server.set_file("/b/feed.xml", rss("Outlet B", [("/b/1.html", "b1")]))
        feeds = tmp / "feeds.txt"
        feeds.write_text("\n".join(server.url(p) for p in
                                   ("/a/feed.xml", "/b/feed.xml", "/d/missing.xml")) + "\n")
        yield server, feeds, tmp


def _rows(out: Path, table: str) -> list[dict]:
    rows: list[dict] = []
    for path in committed_files(str(out), table):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _summary(out: Path) -> dict:
    manifests = [p for p in (out / "_runs").glob("*.json")
                 if not p.name.endswith(".intent.json")]
    assert len(manifests) == 1, manifests
    return json.loads(manifests[0].read_text())["summary"]


@pytest.mark.slow
def test_ingest_exits_0_prints_plain_progress_and_a_json_summary_that_matches_parquet(site):
    server, feeds, tmp = site
    out = tmp / "ok"
    proc = newsbeam("ingest", "--feeds", str(feeds), "--output", str(out),
                    "--allow-private-network", "--story-similarity", "lexical",
                    "--per-host-delay", "0")
    assert proc.returncode == 0, proc.stderr
    # Piped: plain progress lines, no carriage returns, and none of Beam's start-up notices.
    progress = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert progress, proc.stderr
    assert "\r" not in proc.stderr
    assert progress[-1] == ("progress: feeds 2 of 3 with entries, 1 failed | entries 4 | "
                            "pages 3 fetched, 1 failed | articles 3, duplicates 0")
    assert "apitools" not in proc.stderr and "INFO" not in proc.stderr
    assert "accounting OK" in proc.stdout

    articles, duplicates, errors = (_rows(out, t) for t in ("articles", "duplicates", "errors"))
    summary = _summary(out)
    assert summary["command"] == "ingest" and summary["exit_code"] == 0
    assert summary["articles"] == len(articles) == 3
    assert summary["duplicates"] == len(duplicates) == 0
    entry_errors = [e for e in errors if e["level"] == "entry"]
    assert summary["entry_errors"] == len(entry_errors) == 1
    assert summary["feed_errors"] == len(errors) - len(entry_errors) == 1
    assert summary["entries_read"] == len(articles) + len(duplicates) + len(entry_errors) == 4
    assert summary["balanced"] is True
    assert summary["errors_by_reason"] == {"fetch_feed/http_404": 1, "fetch_page/http_404": 1}
    assert set(summary["timings"]) == {"pipeline_s", "publish_s", "summary_s", "total_s"}
    assert summary["timings"]["total_s"] >= summary["timings"]["pipeline_s"] > 0


@pytest.mark.slow
def test_every_feed_refused_exits_3_with_a_hint(site):
    _, feeds, tmp = site
    out = tmp / "refused"
    proc = newsbeam("ingest", "--feeds", str(feeds), "--output", str(out),
                    "--story-similarity", "lexical", "-q")
    assert proc.returncode == 3, proc.stderr
    assert "progress: " not in proc.stderr  # -q
    assert "--allow-private-network" in proc.stdout
    errors = _rows(out, "errors")
    assert len(errors) == 3 and {e["reason"] for e in errors} == {"blocked_address"}
    summary = _summary(out)
    assert summary["exit_code"] == 3 and summary["articles"] == 0
    assert summary["feed_errors"] == 3 and summary["balanced"] is True


@pytest.mark.slow
def test_busy_output_exits_75_and_a_failed_run_exits_1(site):
    from transforms.sinks.lease import OutputLease

    _, feeds, tmp = site
    out = tmp / "busy"
    out.mkdir()
    with OutputLease(str(out), "holder", wait=0, command="test"):
        proc = newsbeam("ingest", "--feeds", str(feeds), "--output", str(out),
                        "--allow-private-network", "--story-similarity", "lexical")
    assert proc.returncode == 75, proc.stderr
    assert "lock-wait" in proc.stderr
    # A runner Beam does not know fails the run itself (not the command line): exit 1.
    proc = newsbeam("ingest", "--feeds", str(feeds), "--output", str(tmp / "failed"),
                    "--allow-private-network", "--runner", "NoSuchRunner")
    assert proc.returncode == 1, proc.stderr
    assert "NoSuchRunner" in proc.stderr


@pytest.mark.slow
def test_a_watch_cycle_keeps_its_summary_in_its_manifest(site):
    _, feeds, tmp = site
    out = tmp / "watched"
    proc = newsbeam("watch", "--feeds", str(feeds), "--output", str(out),
                    "--allow-private-network", "--story-similarity", "lexical",
                    "--per-host-delay", "0", "--cycles", "1", "--poll-interval", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert "cycle 1 " in proc.stdout and "progress: " in proc.stderr
    summary = _summary(out)
    assert summary["command"] == "watch" and summary["exit_code"] == 0
    articles, errors = _rows(out, "articles"), _rows(out, "errors")
    assert summary["articles"] == len(articles) == 3
    assert summary["entry_errors"] + summary["feed_errors"] == len(errors) == 2
    assert summary["entries_read"] == 4 and summary["balanced"] is True
