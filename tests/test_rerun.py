"""Re-runs add nothing to any table, also after a run killed half-way through its publish;
stable identities of duplicates and errors; the process ends cleanly (exit 0, no gRPC
server or thread of the runner left behind)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipelines.demo.run import demo_feeds_file
from pipelines.demo.server import SiteServer
from pipelines.ingest import run
from transforms.sinks import publish as pub

ROOT = Path(__file__).resolve().parents[1]


class Killed(Exception):
    pass


def rows(out: Path, table: str) -> list[tuple]:
    """Every row of a table (times and run-dependent columns left out), sorted."""
    folder = out / table
    if not folder.exists():
        return []
    t = ds.dataset(str(folder), format="parquet", partitioning="hive").to_table()
    keep = [c for c in t.column_names if c not in ("fetched_at", "detected_at", "occurred_at")]
    return sorted(tuple(map(repr, r.values())) for r in t.select(keep).to_pylist())


@pytest.mark.slow
def test_killed_publish_then_reruns_equal_one_clean_run(tmp_path):
    out = tmp_path / "out"
    args = ["--output", str(out), "--allow-private-network", "--per-host-delay", "0",
            "--story-similarity", "lexical"]

    def pause_after(n):
        seen = {"n": 0}

        def pause(step):
            if step == "rename":
                seen["n"] += 1
                if seen["n"] > n:
                    raise Killed(step)
        return pause

    with SiteServer() as server:  # one server, one port: the same inputs every run
        feeds = demo_feeds_file(server.base_url, str(tmp_path))
        with pytest.raises(Killed):
            run(["--feeds", feeds, *args], quiet=True, pause=pause_after(5))
        assert len(pub.committed_files(str(out), "articles")) == 0  # readers: nothing yet
        intent = json.loads(next((out / "_runs").glob("*.intent.json")).read_text())
        planned = {t: sum(f["rows"] for f in intent["files"] if f["table"] == t)
                   for t in pub.TABLES}
        # The next run finishes the killed publish first and folds the killed run's
        # journal into the state, so its feeds answer 304 and nothing is read again.
        result, second = run(["--feeds", feeds, *args], quiet=True)
        after_second = {t: rows(out, t) for t in pub.TABLES}
        assert second.entries_read == 0 and second.counters["feeds_not_modified"] > 0
        # It ends like every run: its pipeline's result, its summary in its manifest.
        assert result is not None
        kept = pub.read_manifest(str(out), second.run_id)["summary"]
        assert (kept["command"], kept["exit_code"], kept["entries_read"]) == ("ingest", 0, 0)
        assert kept["counters"]["feeds_not_modified"] == second.counters["feeds_not_modified"]
        # A run told to read everything again finds every row published already.
        _, third = run(["--feeds", feeds, *args, "--refetch"], quiet=True)
    assert {t: len(after_second[t]) for t in pub.TABLES} == planned
    assert planned["articles"] > 0 and planned["duplicates"] > 0 and planned["errors"] > 0
    for s in (second, third):
        assert (s.articles, s.duplicates, s.entry_errors, s.feed_errors) == (0, 0, 0, 0)
        assert s.balanced
    assert third.already_published == third.entries_read > 0
    assert {t: rows(out, t) for t in pub.TABLES} == after_second
    # What a plain glob reads equals what the manifests name.
    for t in pub.TABLES:
        assert len(pub.committed_files(str(out), t)) == len(
            list((out / t).glob("**/*.parquet")))


def test_published_rows_are_recognised_by_identity():
    published = pub.Published()
    published.keys["errors"].add(("f", "u", "entry", "fetch_page", "http_404"))
    published.keys["duplicates"].add(("f", "u2", "b", "url", "a"))
    published.article_feeds.add(("a", "f"))
    errors = pa.table({"feed_url": ["f", "f"], "url": ["u", "u"], "level": ["entry"] * 2,
                       "stage": ["fetch_page"] * 2, "reason": ["http_404", "timeout"]})
    assert published.mask("errors", errors) == [True, False]
    dups = pa.table({"feed_url": ["f", "f", "g", "f"], "url": ["u2", "u1", "u1", "u3"],
                     "article_id": ["b", "a", "a", "c"], "level": ["url", "content", "url", "near"],
                     "duplicate_of": ["a", "a", "a", "a"]})
    # Same record; the article read again from its own feed; another feed listing the
    # published article (a new sighting); a new near copy.
    assert published.mask("duplicates", dups) == [True, True, False, False]


def test_a_run_exits_0_and_leaves_no_runner_server_behind(tmp_path):
    backfill = tmp_path / "in.jsonl"
    backfill.write_text("\n".join(json.dumps({
        "url": f"https://example.org/{i}", "title": f"Story {i}",
        "published": "2024-11-23T09:00:00Z",
        "text": f"Story number {i} about the harbour and the council. " * 12})
        for i in range(3)) + "\n")
    script = (
        "import os, sys, threading\n"
        "from pipelines.cli import main\n"
        f"code = main(['ingest', '--articles', {str(backfill)!r},"
        f" '--output', {str(tmp_path / 'o')!r}, '--story-similarity', 'lexical'])\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "native = [open(f'/proc/self/task/{t}/comm').read().strip()\n"
        "          for t in os.listdir('/proc/self/task')]\n"
        "print('THREADS', names, native)\n"
        "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("THREADS"))
    # No gRPC server (its "_serve" thread, its C++ event-engine and timer threads) and no
    # lease heartbeat outlives the run; they are what could wake up while the interpreter
    # shuts down and abort it.
    assert "_serve" not in line and "event_engine" not in line and "grpc" not in line
    assert "newsbeam-lease" not in line
    assert "terminate called" not in proc.stderr


@pytest.mark.slow
def test_a_second_demo_into_the_same_folder_adds_no_rows(tmp_path, capsys):
    import socket

    from pipelines.demo.run import run_demo

    # The demo's own port may be taken by a demo running beside the tests: pick a free one
    # and serve both runs there, as two demos on DEMO_PORT would.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "demo"
    args = ["--story-similarity", "lexical"]
    assert run_demo(str(out), args, port=port) == 0
    first = {t: rows(out, t) for t in ("articles", "duplicates", "errors")}
    assert run_demo(str(out), args, port=port) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"http://127.0.0.1:{port}") == 2, printed
    assert "0 articles written, 0 duplicates, 0 entry errors" in printed
    assert {t: rows(out, t) for t in first} == first
    assert len(first["articles"]) == 26


def page_requests(server: SiteServer) -> list[str]:
    """Logged requests for anything but feeds and robots.txt."""
    return [r.path for r in list(server.requests)
            if not r.path.endswith(("/robots.txt", ".xml", ".atom", ".json"))]


@pytest.mark.slow
def test_a_batch_rerun_fetches_only_what_changed(tmp_path):
    out = tmp_path / "out"
    args = ["--output", str(out), "--allow-private-network", "--per-host-delay", "0",
            "--story-similarity", "lexical"]
    with SiteServer() as server:
        feeds = demo_feeds_file(server.base_url, str(tmp_path))
        _, first = run(["--feeds", feeds, *args], quiet=True)
        assert first.articles > 0 and first.balanced
        written = {t: rows(out, t) for t in pub.TABLES}
        state = json.loads((out / "_state" / "feeds.json").read_text())
        assert state and all(s.get("etag") or s.get("last_status") == "failed"
                             for s in state.values())

        server.clear_requests()
        _, second = run(["--feeds", feeds, *args], quiet=True)
        # Every feed that answered before is asked with its validators and answers 304;
        # not one article page is fetched and no table gains a row.
        feed_hits = [r for r in list(server.requests) if r.path.endswith((".xml", ".atom"))]
        assert feed_hits and all(r.conditional and r.status == 304 for r in feed_hits)
        assert page_requests(server) == []
        assert {t: rows(out, t) for t in pub.TABLES} == written
        assert second.entries_read == 0 and second.balanced

        # One feed gains an item: only that feed is read in full, only the new page fetched.
        feed_path = "/harbor-ledger/feed.xml"
        text = (ROOT / "pipelines/demo/site/harbor-ledger/feed.xml").read_text()
        item = ("<item><title>Harbour reopens after the storm</title>"
                "<link>{{BASE}}/harbor-ledger/2024/11/harbour-reopens.html</link>"
                "<pubDate>Mon, 25 Nov 2024 08:00:00 +0000</pubDate>"
                "<guid>{{BASE}}/harbor-ledger/2024/11/harbour-reopens.html</guid></item>")
        server.set_file(feed_path, text.replace("<item>", item + "<item>", 1))
        body = " ".join(["The harbour reopened to shipping on Monday after the storm "
                         "that closed it for three days, the port authority said."] * 12)
        server.set_file("/harbor-ledger/2024/11/harbour-reopens.html",
                        f"<html><head><title>Harbour reopens</title></head><body><article>"
                        f"<h1>Harbour reopens after the storm</h1><p>{body}</p></article>"
                        f"</body></html>")
        server.clear_requests()
        _, third = run(["--feeds", feeds, *args], quiet=True)
        assert page_requests(server) == ["/harbor-ledger/2024/11/harbour-reopens.html"]
        assert third.entries_read == 1 and third.articles == 1 and third.balanced
        assert third.counters["entries_unchanged"] > 0
    after = rows(out, "articles")
    assert len(after) == len(written["articles"]) + 1
