"""One writer per output folder: the lease protocol with an injected clock, then real
processes (batch + batch, watch + batch) competing for one folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from transforms.sinks.lease import EXIT_BUSY, LEASE_FILE, LeaseBusy, OutputLease

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def lease(root, run_id, clock, **kw) -> OutputLease:
    return OutputLease(str(root), run_id, clock=clock, sleep=clock.sleep, heartbeat=False,
                       reentrant=False, **kw)


def test_second_writer_refused_with_the_holder_named(tmp_path):
    clock = FakeClock()
    a = lease(tmp_path, "run-a", clock, lease_seconds=30).acquire()
    holder = json.loads((tmp_path / LEASE_FILE).read_text())
    assert (holder["run_id"], holder["pid"], holder["host"]) == ("run-a", os.getpid(),
                                                                 a.host)
    with pytest.raises(LeaseBusy) as e:
        lease(tmp_path, "run-b", clock, lease_seconds=30).acquire()
    message = str(e.value)
    assert "\n" not in message and "run run-a" in message and f"pid {os.getpid()}" in message
    assert "--lock-wait" in message
    a.release()
    assert not (tmp_path / LEASE_FILE).exists()
    lease(tmp_path, "run-b", clock, lease_seconds=30).acquire().release()


def test_wait_is_bounded_and_ends_when_the_holder_leaves(tmp_path):
    clock = FakeClock()
    a = lease(tmp_path, "run-a", clock, lease_seconds=30).acquire()
    b = lease(tmp_path, "run-b", clock, wait=5, lease_seconds=30)
    with pytest.raises(LeaseBusy):
        b.acquire()
    assert 4.9 <= sum(clock.sleeps) <= 5.0 and len(clock.sleeps) <= 10
    # The holder releases while the other waits: it gets the lease at its next try.
    clock.sleeps.clear()
    c = OutputLease(str(tmp_path), "run-c", wait=5, lease_seconds=30, clock=clock,
                    sleep=lambda s: (clock.sleep(s), a.release()), heartbeat=False,
                    reentrant=False)
    c.acquire()
    assert c.held and len(clock.sleeps) == 1
    c.release()


def test_heartbeat_keeps_the_lease_and_a_silent_holder_is_taken_over(tmp_path):
    clock = FakeClock()
    a = lease(tmp_path, "run-a", clock, lease_seconds=30).acquire()
    for _ in range(5):  # a live holder renews: never stale, however long it runs
        clock.t += 20
        assert a.renew()
        with pytest.raises(LeaseBusy):
            lease(tmp_path, "run-b", clock, lease_seconds=30).acquire()
    clock.t += 31  # no heartbeat for longer than the lease: stale
    b = lease(tmp_path, "run-b", clock, lease_seconds=30).acquire()
    assert b.took_over is not None and b.took_over.run_id == "run-a"
    assert not a.renew() and a.lost.is_set()  # the old holder learns it lost the lease
    a.release()  # does not remove the new holder's lease
    assert json.loads((tmp_path / LEASE_FILE).read_text())["run_id"] == "run-b"
    b.release()


def test_lease_of_a_dead_process_is_taken_over_at_once(tmp_path):
    clock = FakeClock()
    proc = subprocess.run([sys.executable, "-c",
                           "import os, sys; print(os.getpid(), open(f'/proc/{os.getpid()}/stat')"
                           ".read().rsplit(')', 1)[1].split()[19])"],
                          capture_output=True, text=True, check=True)
    pid, start = proc.stdout.split()
    a = lease(tmp_path, "run-a", clock, lease_seconds=3600).acquire()
    data = json.loads((tmp_path / LEASE_FILE).read_text())
    data.update(pid=int(pid), pid_start=start, token="dead", run_id="run-dead")
    (tmp_path / LEASE_FILE).write_text(json.dumps(data))
    a.held = False
    b = lease(tmp_path, "run-b", clock, lease_seconds=3600).acquire()  # no clock advance
    assert b.took_over.run_id == "run-dead"
    b.release()


def test_heartbeat_thread_renews_and_stops_on_release(tmp_path):
    a = OutputLease(str(tmp_path), "run-a", lease_seconds=0.3, reentrant=False).acquire()
    first = json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat_at"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded: renewals every 0.1 s
        if json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat_at"] > first:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the heartbeat never renewed the lease")
    a.release()
    assert not any(t.name == "newsbeam-lease" for t in threading.enumerate())
    assert not (tmp_path / LEASE_FILE).exists()


# -- real processes -----------------------------------------------------------------------

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Gate Times</title><link>{base}/</link>
<item><title>First story about the harbour</title><link>{base}/a/1.html</link>
<guid>{base}/a/1.html</guid><pubDate>Sat, 23 Nov 2024 09:00:00 GMT</pubDate></item>
<item><title>Second story about the council</title><link>{base}/a/2.html</link>
<guid>{base}/a/2.html</guid><pubDate>Sat, 23 Nov 2024 10:00:00 GMT</pubDate></item>
<item><title>A page that is gone</title><link>{base}/a/gone.html</link>
<guid>{base}/a/gone.html</guid><pubDate>Sat, 23 Nov 2024 11:00:00 GMT</pubDate></item>
</channel></rss>"""

TEXTS = {
    "/a/1.html": ("Harbour dredging resumes", "The harbour authority restarted dredging of "
                  "the northern channel on Saturday after divers cleared an old anchor chain. "
                  "Ferries keep their timetable; cargo ships wait for high tide. "),
    "/a/2.html": ("Council votes on school budget", "Councillors approved the school "
                  "budget by nine votes to four after a debate about heating costs, bus "
                  "routes and the library that closed last spring. "),
}
PAGE = ("<html><head><title>{t}</title></head><body><article><h1>{t}</h1>"
        "<p>{body}</p><p>{body}</p><p>{body}</p></article></body></html>")


class GatedSite:
    """A loopback news site whose article pages wait until :attr:`gate` opens."""

    def __init__(self):
        self.gate = threading.Event()
        self.page_requests = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                if self.path == "/feed.xml":
                    body, ctype, status = FEED.format(base=base), "application/rss+xml", 200
                elif self.path in TEXTS:
                    site.page_requests.set()
                    # Trickles a byte a second until the test opens the gate (bounded), so
                    # the fetch neither completes nor times out meanwhile.
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.end_headers()
                    for _ in range(300):
                        if site.gate.wait(1):
                            break
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    title, text = TEXTS[self.path]
                    self.wfile.write(PAGE.format(t=title, body=text).encode())
                    return
                else:
                    body, ctype, status = "not here", "text/plain", 404
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", f"{ctype}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def feed(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def newsbeam(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def ingest_args(site: GatedSite, out: Path, *extra: str) -> list[str]:
    return newsbeam("ingest", "--feeds", site.feed, "--output", str(out),
                    "--allow-private-network", "--per-host-delay", "0", "--timeout", "600",
                    "--story-similarity", "lexical", *extra)


def table_rows(out: Path, table: str) -> int:
    folder = out / table
    return ds.dataset(str(folder), format="parquet").count_rows() if folder.exists() else 0


def wait_for(predicate, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_batch_and_batch(tmp_path):
    out = tmp_path / "out"
    with GatedSite() as site:
        first = subprocess.Popen(ingest_args(site, out), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            # The first run holds the lease while its page fetches wait at the gate.
            wait_for(site.page_requests.is_set, "the first run to fetch pages")
            refused = subprocess.run(ingest_args(site, out), cwd=ROOT, capture_output=True,
                                     text=True, timeout=300)
            assert refused.returncode == EXIT_BUSY, refused.stderr
            line = [x for x in refused.stderr.splitlines() if x.startswith("newsbeam ingest:")]
            assert len(line) == 1 and "is being written by newsbeam ingest run" in line[0]
            assert f"pid {first.pid}" in line[0]
            # A waiting second run starts once the first has published, and adds nothing.
            second = subprocess.Popen(ingest_args(site, out, "--lock-wait", "600"), cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            site.gate.set()
            out1, err1 = first.communicate(timeout=600)
            out2, err2 = second.communicate(timeout=600)
        finally:
            for p in (first,):
                if p.poll() is None:
                    p.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "2 articles written, 0 duplicates, 1 entry errors [accounting OK]" in out1
    # The second run remembers the first one's entries: nothing is read or fetched again.
    assert ("entries read 0: 0 articles written, 0 duplicates, 0 entry errors "
            "[accounting OK]") in out2
    assert "3 entries seen in earlier runs (not fetched again)" in out2
    assert (table_rows(out, "articles"), table_rows(out, "errors")) == (2, 1)
    assert table_rows(out, "duplicates") == 0
    assert not (out / "_lock.json").exists()


@pytest.mark.slow
def test_watch_and_batch(tmp_path):
    out = tmp_path / "out"
    with GatedSite() as site:
        site.gate.set()
        watch = subprocess.Popen(
            newsbeam("watch", "--feeds", site.feed, "--output", str(out),
                     "--allow-private-network", "--per-host-delay", "0",
                     "--story-similarity", "lexical", "--poll-interval", "3600",
                     "--cycles", "2"),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # After its first cycle the watch loop sleeps until the next poll, holding
            # the folder.
            first_line = watch.stdout.readline()
            assert first_line.startswith("newsbeam watch:"), first_line
            cycle = watch.stdout.readline()
            assert cycle.startswith("cycle 1 "), cycle
            refused = subprocess.run(ingest_args(site, out, "--lock-wait", "1"), cwd=ROOT,
                                     capture_output=True, text=True, timeout=300)
            assert refused.returncode == EXIT_BUSY, refused.stderr
            assert "is being written by newsbeam watch run watch-" in refused.stderr
            watch.send_signal(signal.SIGTERM)  # stops after the current (idle) wait
            rest, err = watch.communicate(timeout=300)
        finally:
            if watch.poll() is None:
                watch.kill()
        assert watch.returncode == 0, err
        after = subprocess.run(ingest_args(site, out), cwd=ROOT, capture_output=True,
                               text=True, timeout=600)
    assert after.returncode == 0, after.stderr
    # The batch run after watch finds the three entries in the state watch kept.
    assert "entries read 0: 0 articles written" in after.stdout
    assert "3 entries seen in earlier runs (not fetched again)" in after.stdout
    assert (table_rows(out, "articles"), table_rows(out, "errors")) == (2, 1)
