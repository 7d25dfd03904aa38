"""The pipeline runs unchanged on portable runners, with SDK workers in other processes.

What a distributed runner (Dataflow, Flink, Spark) does to a Python pipeline is: turn it
into a runner-API proto, pickle every DoFn, ship both to SDK worker processes that never
saw the launching process's memory, and run bundles there. These tests do the same on
this machine, offline:

* ``PortableRunner`` with the embedded job server (``--job_endpoint=embed``) and
  ``--environment_type=EXTERNAL`` against a worker pool started here from the same
  virtualenv (``python -m apache_beam.runners.worker.worker_pool_main``), which is how
  Flink and Spark run Python workers;
* the FnApiRunner with ``--direct_running_mode=multi_processing --direct_num_workers=2``;
* ``ingest --streaming`` (PeriodicImpulse polling, keyed state and timers, windowed sinks)
  through ``PortableRunner`` with ``--environment_type=LOOPBACK`` and ``--stop-after``;
* output on an object-store-like Beam filesystem (no folders, no local paths);

and compare the articles, duplicates and errors read back from Parquet with those of a
plain DirectRunner run over the same loopback site. Cheap structural checks on both the
batch and the streaming pipeline (every DoFn picklable and loadable in a fresh
interpreter, no clients opened in constructors, clients closed in ``teardown``,
deterministic keys for keyed state) run without a runner.

Flink, Spark and Dataflow themselves are not run here: their job servers are Java jars
that these machines cannot download.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.coders import registry
from apache_beam.internal import pickler
from apache_beam.io.filesystem import CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.transforms import userstate

from pipelines.demo.server import SiteServer
from pipelines.ingest import build, parse_args, run
from pipelines.streaming import run as run_streaming
from pipelines.summary import run_files
from transforms.fetching.http import HttpClient
from transforms.fetching.politeness import PoliteFetcher

# Columns that must not depend on the runner, the process or the wall clock.
ARTICLE_COLUMNS = ["article_id", "url", "feed_url", "source", "title", "body", "body_source",
                   "authors", "published_at", "language", "topic", "topic_code",
                   "topic_source", "categories", "content_hash", "date"]
DUPLICATE_COLUMNS = ["url", "feed_url", "article_id", "duplicate_of", "level"]
ERROR_COLUMNS = ["url", "feed_url", "level", "stage", "reason", "http_status"]

POOL_START_TIMEOUT = 30.0


# -- the fixture site ----------------------------------------------------------------------
# Three invented outlets: an English RSS feed, a German Atom feed that relists one English
# story (an exact duplicate by URL), a link that answers 404, and a feed that is not XML.

_PARAGRAPHS = {
    "ferry": [
        "The harbour authority of Port Alden confirmed on Tuesday that the night ferry to the "
        "outer islands will run twice a week through the winter, reversing a plan announced "
        "in September to suspend the service until March.",
        "Island councils had argued that the suspension would leave nurses, teachers and "
        "fishermen without a way home after late shifts on the mainland, and they collected "
        "more than four thousand signatures in three weeks.",
        "The operator said a second-hand vessel bought from a Norwegian company would replace "
        "the older boat, which failed its hull inspection in August. Tickets go on sale on "
        "Monday and prices stay at last year's level.",
    ],
    "derby": [
        "Harbour City won the first derby of the season two goals to one after a header in "
        "the ninety-third minute by the nineteen-year-old defender Mira Solberg, her first "
        "goal for the senior team.",
        "Eastgate had led since the half hour through a penalty and looked comfortable until "
        "their goalkeeper was sent off for handling outside the area with twelve minutes "
        "left, after which the home side pressed without pause.",
        "The result lifts Harbour City to third place in the table, two points behind the "
        "leaders, with a game in hand to be played in the week before Christmas.",
    ],
    "chips": [
        "A start-up from Lakeside University has shipped its first batch of low-power sensor "
        "chips to a maker of agricultural drones, eighteen months after the company was "
        "founded by three doctoral students.",
        "The chips measure soil moisture from the air using a small radar and, according to "
        "the company, run for a full season on a coin battery. Independent tests have not "
        "yet been published.",
        "The founders said they would use the proceeds of a recent funding round to hire "
        "twenty engineers and to open a test field near the university campus next spring.",
    ],
    "markt": [
        "Der Wochenmarkt in Altbrück zieht im kommenden Jahr auf den neu gestalteten "
        "Kirchplatz um, wie die Stadtverwaltung am Mittwoch mitteilte. Die Händler hatten "
        "seit langem mehr Platz und einen festen Wasseranschluss gefordert.",
        "Der Umzug soll im April stattfinden, sobald die Bauarbeiten am Platz abgeschlossen "
        "sind. Die Stadt rechnet mit Kosten von rund zweihunderttausend Euro für Strom, "
        "Wasser und neue Markierungen auf dem Pflaster.",
        "Anwohner begrüßten die Entscheidung überwiegend, äußerten aber Sorge wegen der "
        "Parkplätze. Die Verwaltung verweist auf die nahe Straßenbahnhaltestelle und ein "
        "neues Fahrradparkhaus am Bahnhof.",
    ],
    "haushalt": [
        "Der Stadtrat von Altbrück hat den Haushalt für das kommende Jahr mit knapper "
        "Mehrheit beschlossen. Größter Posten bleibt die Sanierung von vier Grundschulen, "
        "für die fast ein Drittel der Investitionen vorgesehen ist.",
        "Die Opposition kritisierte, dass die Gebühren für Kindergärten erneut steigen, und "
        "forderte stattdessen eine höhere Gewerbesteuer. Der Antrag fand keine Mehrheit.",
        "Der Kämmerer warnte vor sinkenden Einnahmen ab dem übernächsten Jahr und kündigte "
        "eine Prüfung aller freiwilligen Leistungen der Stadt an.",
    ],
}


def _page(title: str, paragraphs: list[str], lang: str) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return textwrap.dedent(f"""\
        <!doctype html>
        <html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
        <meta name="author" content="Desk Reporter"></head>
        <body><nav><a href="/">Home</a></nav>
        <article><h1>{title}</h1>
        {body}
        </article>
        <footer>Invented outlet for tests.</footer></body></html>
        """)


def _rss_item(title: str, path: str, date: str, category: str) -> str:
    return (f"<item><title>{title}</title><link>{{{{BASE}}}}{path}</link>"
            f"<guid>{{{{BASE}}}}{path}</guid><pubDate>{date}</pubDate>"
            f"<category>{category}</category><description>{title}.</description></item>")


def _atom_entry(title: str, path: str, date: str, category: str) -> str:
    return (f"<entry><title>{title}</title><link href=\"{{{{BASE}}}}{path}\"/>"
            f"<id>{{{{BASE}}}}{path}</id><updated>{date}</updated>"
            f"<category term=\"{category}\"/><summary>{title}.</summary></entry>")


def write_site(root: Path) -> None:
    """Writes the fixture site (feeds, pages, feed list) below ``root``."""
    pages = {
        "/gazette/ferry.html": ("Night ferry to stay through winter", "ferry", "en"),
        "/gazette/derby.html": ("Late header settles the derby", "derby", "en"),
        "/gazette/chips.html": ("Campus start-up ships first chips", "chips", "en"),
        "/zeitung/markt.html": ("Wochenmarkt zieht auf den Kirchplatz", "markt", "de"),
        "/zeitung/haushalt.html": ("Stadtrat beschließt knappen Haushalt", "haushalt", "de"),
    }
    for path, (title, key, lang) in pages.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_page(title, _PARAGRAPHS[key], lang), encoding="utf-8")
    rss_items = "".join([
        _rss_item("Night ferry to stay through winter", "/gazette/ferry.html",
                  "Tue, 19 Nov 2024 08:00:00 GMT", "World"),
        _rss_item("Late header settles the derby", "/gazette/derby.html",
                  "Wed, 20 Nov 2024 21:30:00 GMT", "Sport"),
        _rss_item("Campus start-up ships first chips", "/gazette/chips.html",
                  "Thu, 21 Nov 2024 10:15:00 GMT", "Technology"),
        _rss_item("Council minutes", "/gazette/gone.html",
                  "Thu, 21 Nov 2024 12:00:00 GMT", "Politics"),
    ])
    (root / "gazette").mkdir(exist_ok=True)
    (root / "gazette" / "feed.xml").write_text(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel>"
        "<title>Alden Gazette</title><link>{{BASE}}/gazette/</link><language>en</language>"
        f"{rss_items}</channel></rss>", encoding="utf-8")
    atom_entries = "".join([
        _atom_entry("Wochenmarkt zieht auf den Kirchplatz", "/zeitung/markt.html",
                    "2024-11-20T07:00:00Z", "Wirtschaft"),
        _atom_entry("Stadtrat beschließt knappen Haushalt", "/zeitung/haushalt.html",
                    "2024-11-21T16:45:00Z", "Politik"),
        # The same story relisted by the partner outlet: a duplicate by URL.
        _atom_entry("Night ferry to stay through winter", "/gazette/ferry.html",
                    "2024-11-19T09:00:00Z", "World"),
    ])
    (root / "zeitung").mkdir(exist_ok=True)
    (root / "zeitung" / "feed.atom").write_text(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>"
        "<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"de\">"
        "<title>Altbrücker Zeitung</title><id>{{BASE}}/zeitung/</id>"
        "<updated>2024-11-21T16:45:00Z</updated>"
        f"{atom_entries}</feed>", encoding="utf-8")
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "feed.xml").write_text("this is not a feed <<<", encoding="utf-8")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The fixture site served on loopback, and a feed list file pointing at it."""
    root = tmp_path_factory.mktemp("site")
    write_site(root)
    with SiteServer(root) as server:
        feeds = root / "feeds.txt"
        feeds.write_text("".join(f"{server.base_url}{p}\n" for p in (
            "/gazette/feed.xml", "/zeitung/feed.atom", "/broken/feed.xml")), encoding="utf-8")
        yield server, str(feeds)


def _read_back(root: str, table: str, run_id: str, columns: list[str]) -> list[tuple]:
    """The run's rows of ``table``, projected on ``columns``, in a canonical order."""
    rows = []
    for path in run_files(root, table, run_id):
        # Partition columns (date, topic) live in the folder names, not in the files.
        partition = dict(part.split("=", 1) for part in path.split("/") if "=" in part)
        with FileSystems.open(path) as f:
            t = pq.read_table(f, columns=[c for c in columns if c not in partition])
        for row in t.to_pylist():
            row.update(partition)
            rows.append(tuple(tuple(v) if isinstance(v, list) else v
                              for v in (row[c] for c in columns)))
    return sorted(rows, key=repr)


def _outputs(root: str, run_id: str) -> dict[str, list[tuple]]:
    return {
        "articles": _read_back(root, "articles", run_id, ARTICLE_COLUMNS),
        "duplicates": _read_back(root, "duplicates", run_id, DUPLICATE_COLUMNS),
        "errors": _read_back(root, "errors", run_id, ERROR_COLUMNS),
    }


def _ingest(feeds: str, output: Path | str, run_id: str, *runner_args: str):
    # The mode is the CLI's choice; here, as there, --streaming runs the unbounded pipeline.
    entry = run_streaming if "--streaming" in runner_args else run
    _, summary = entry(["--feeds", feeds, "--output", str(output), "--allow-private-network",
                        "--run-id", run_id, "--fetch-threads", "4", *runner_args], quiet=True)
    return summary, _outputs(str(output), run_id)


@pytest.fixture(scope="module")
def direct_outputs(site, tmp_path_factory):
    """The reference: the same feeds through the default DirectRunner."""
    _, feeds = site
    out = tmp_path_factory.mktemp("direct")
    summary, outputs = _ingest(feeds, out, "direct", "--runner=DirectRunner")
    # The reference itself must be right, or equality with it proves little.
    assert summary.balanced, summary.render()
    assert len(outputs["articles"]) == 5
    assert {r[ARTICLE_COLUMNS.index("language")] for r in outputs["articles"]} == {"en", "de"}
    assert [r[DUPLICATE_COLUMNS.index("level")] for r in outputs["duplicates"]] == ["url"]
    reasons = {(r[ERROR_COLUMNS.index("stage")], r[ERROR_COLUMNS.index("reason")])
               for r in outputs["errors"]}
    assert reasons == {("fetch_page", "http_404"), ("parse_feed", "malformed_feed")}
    return outputs


# -- the worker pool -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker pool exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"worker pool did not listen on port {port} within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen) -> None:
    """Stops the pool and the SDK workers it forked (they share its process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    # Forked SDK workers may outlive the pool: the group is ours, end all of it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def worker_pool(tmp_path):
    """A Beam SDK worker pool in its own process group, from this virtualenv."""
    port = _free_port()
    env = dict(os.environ)
    # The pool launches SDK workers with the `python` found on PATH; without the venv first
    # a worker that cannot import Beam or this project makes the job hang without an error.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log = (tmp_path / "worker_pool.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
         f"--service_port={port}"],
        # Run outside the source tree: workers must find the project as an installed package.
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, proc, POOL_START_TIMEOUT)
        yield port, proc
    finally:
        _stop_group(proc)
        log.close()


def _worker_pids(pool: subprocess.Popen) -> set[int]:
    """Processes of the pool's process group other than the pool itself."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pool.pid and int(entry.name) != pool.pid:  # fields[2] = pgrp
            pids.add(int(entry.name))
    return pids


# -- end-to-end equality ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.portable
@pytest.mark.timeout(300)
def test_portable_runner_with_external_worker_pool_matches_direct_runner(
        site, direct_outputs, worker_pool, tmp_path):
    _, feeds = site
    port, pool = worker_pool
    seen_workers: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # bounded by the test's own duration
        while not stop.wait(0.2):
            seen_workers.update(_worker_pids(pool))

    with ThreadPoolExecutor(1) as watcher:
        watcher.submit(watch)
        try:
            summary, outputs = _ingest(
                feeds, tmp_path / "out", "portable",
                "--runner=PortableRunner", "--job_endpoint=embed",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{port}")
        finally:
            stop.set()
    # The bundles really ran in SDK worker processes forked by the pool.
    assert seen_workers, "no SDK worker process was started by the worker pool"
    assert os.getpid() not in seen_workers
    assert summary.balanced, summary.render()
    assert outputs == direct_outputs


@pytest.mark.slow
@pytest.mark.portable
@pytest.mark.timeout(300)
def test_multi_processing_direct_runner_matches_direct_runner(site, direct_outputs, tmp_path):
    _, feeds = site
    summary, outputs = _ingest(
        feeds, tmp_path / "out", "multi", "--runner=DirectRunner",
        "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert summary.balanced, summary.render()
    assert outputs == direct_outputs


# -- structural checks, no runner ------------------------------------------------------------

def _built_pipeline(tmp_path: Path, kind: str = "batch") -> beam.Pipeline:
    """The batch pipeline (``build``) or the unbounded one (``build_streaming``)."""
    from pipelines.streaming import build_streaming

    feeds = tmp_path / "feeds.txt"
    feeds.write_text("http://127.0.0.1:9/feed.xml\n", encoding="utf-8")
    config, _ = parse_args(["--feeds", str(feeds), "--output", str(tmp_path / "out"),
                            "--allow-private-network"])
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    if kind == "batch":
        build(pipeline, config)
    else:
        build_streaming(pipeline, config, poll_interval=60.0)
    return pipeline


PIPELINES = pytest.mark.parametrize("kind", ["batch", "streaming"])


class _Collect(PipelineVisitor):
    """Every leaf transform of a pipeline, with its DoFn when it is a ParDo."""

    def __init__(self) -> None:
        self.transforms = []

    def visit_transform(self, node) -> None:
        self.transforms.append(node)


def _applied(pipeline: beam.Pipeline):
    collector = _Collect()
    pipeline.visit(collector)
    return collector.transforms


def _project_dofns(pipeline: beam.Pipeline) -> list[beam.DoFn]:
    fns = []
    for node in _applied(pipeline):
        fn = getattr(node.transform, "fn", None)
        if isinstance(fn, beam.DoFn) and type(fn).__module__.split(".")[0] in (
                "transforms", "pipelines", "schemas"):
            fns.append(fn)
    return fns


def test_build_uses_project_dofns(tmp_path):
    names = {type(fn).__name__ for fn in _project_dofns(_built_pipeline(tmp_path))}
    # The stages that do real work are all present (a sanity check for the tests below).
    assert {"FetchFeedsFn", "FetchPagesFn", "DetectLanguageFn", "AssignTopicFn",
            "KeepFirstInGroupFn"} <= names


@PIPELINES
def test_every_transform_pickles_and_loads_in_a_fresh_interpreter(tmp_path, kind):
    """What a remote worker does, without --save_main_session and outside the test module."""
    pipeline = _built_pipeline(tmp_path, kind)
    blobs = []
    for node in _applied(pipeline):
        fn = getattr(node.transform, "fn", None)
        payload = fn if isinstance(fn, beam.DoFn) else node.transform
        blobs.append((node.full_label, type(payload).__name__, pickler.dumps(payload)))
    assert blobs
    pickled = tmp_path / "transforms.pkl"
    pickled.write_bytes(pickle.dumps(blobs))
    script = textwrap.dedent(f"""
        import pickle, sys
        from apache_beam.internal import pickler
        blobs = pickle.loads(open({str(pickled)!r}, "rb").read())
        bad = []
        for label, name, blob in blobs:
            obj = pickler.loads(blob)
            if type(obj).__name__ != name:
                bad.append(label)
        assert "__main__" not in {{type(pickler.loads(b)).__module__ for _, _, b in blobs}}
        assert not any(p.endswith("tests") for p in sys.path), sys.path
        print(len(blobs), "ok" if not bad else bad)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "ok", done.stdout


# Objects a constructor must not create: they hold sockets, threads or files, cannot be
# pickled, and would be shared by every bundle of every thread on a worker.
_CLIENT_TYPES = (PoliteFetcher, HttpClient, ThreadPoolExecutor, socket.socket,
                 threading.Thread)


def _holds_client(value, depth: int = 0) -> bool:
    if isinstance(value, _CLIENT_TYPES) or hasattr(value, "fileno"):
        return True
    if depth < 2 and isinstance(value, dict):
        return any(_holds_client(v, depth + 1) for v in value.values())
    if depth < 2 and isinstance(value, (list, tuple, set)):
        return any(_holds_client(v, depth + 1) for v in value)
    return False


@PIPELINES
def test_no_dofn_opens_clients_in_its_constructor(tmp_path, kind):
    for fn in _project_dofns(_built_pipeline(tmp_path, kind)):
        opened = [k for k, v in vars(fn).items() if _holds_client(v)]
        assert not opened, f"{type(fn).__name__}.__init__ opened {opened}"


@PIPELINES
def test_clients_open_in_setup_and_close_in_teardown(tmp_path, kind):
    checked = 0
    for fn in _project_dofns(_built_pipeline(tmp_path, kind)):
        fn = pickler.loads(pickler.dumps(fn))  # a worker's copy, as a runner would make it
        fn.setup()
        try:
            opened = {k: v for k, v in vars(fn).items() if _holds_client(v)}
        finally:
            fn.teardown()
        for name, client in opened.items():
            checked += 1
            if isinstance(client, PoliteFetcher):  # its client and its threads
                assert client.scheduler.is_shutdown, f"{type(fn).__name__}.{name} left threads"
                client = client.client
            if isinstance(client, HttpClient):
                assert not client._pools, f"{type(fn).__name__}.{name} left pools open"
            if isinstance(client, ThreadPoolExecutor):
                assert client._shutdown, f"{type(fn).__name__}.{name} was not shut down"
    assert checked >= 2  # at least the feed and page fetchers open something


@PIPELINES
def test_stateful_dofns_have_deterministic_key_coders(tmp_path, kind):
    """Keyed state is partitioned by encoded key: a pickled key could split one key in two."""
    pipeline = _built_pipeline(tmp_path, kind)
    stateful = 0
    for node in _applied(pipeline):
        fn = getattr(node.transform, "fn", None)
        if not isinstance(fn, beam.DoFn) or not userstate.is_stateful_dofn(fn):
            continue
        stateful += 1
        (pcoll,) = [p for p in node.main_inputs.values()]
        coder = registry.get_coder(pcoll.element_type)
        assert coder.is_kv_coder(), f"{node.full_label}: input is not keyed ({coder})"
        key_coder = coder.key_coder()
        assert key_coder.is_deterministic(), (
            f"{node.full_label}: key coder {key_coder} is not deterministic; add "
            ".with_output_types(tuple[str, Any]) to the step that makes the keys")
    # Batch: every key fires once, so dedup and stories run without keyed state (their
    # stateful twins, used under repeating triggers, are checked in tests/test_dedup.py and
    # tests/test_stories_paths.py). Streaming: feed polling and first sightings keep state.
    assert stateful >= (0 if kind == "batch" else 3)




# -- output on a non-local Beam filesystem -----------------------------------------------------

class _ObjectStoreFileSystem(FileSystem):
    """``nbtest://`` paths with object-store semantics (no folders), kept in a local folder.

    Like ``gs://`` or ``s3://``: ``mkdirs`` does nothing, only files exist, listing is by
    prefix and writes never need a parent folder. A pipeline that writes its output with
    ``os``/``open`` instead of ``apache_beam.io.filesystems`` cannot write here at all.
    """

    SCHEME = "nbtest"
    root = ""  # the backing folder, set by the test

    @classmethod
    def scheme(cls) -> str:
        return cls.SCHEME

    def _local(self, url: str) -> str:
        prefix = f"{self.SCHEME}://"
        assert url.startswith(prefix), url
        return os.path.join(self.root, url[len(prefix):])

    def _url(self, local: str) -> str:
        return f"{self.SCHEME}://" + os.path.relpath(local, self.root)

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for folder, _, names in os.walk(self.root):
            for name in names:
                local = os.path.join(folder, name)
                url = self._url(local)
                if url.startswith(dir_or_prefix):
                    stat = os.stat(local)
                    yield FileMetadata(url, stat.st_size, stat.st_mtime)

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        local = self._local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return open(local, "wb")  # noqa: SIM115 - the caller closes the channel

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        return open(self._local(path), "rb")  # noqa: SIM115 - the caller closes it

    def copy(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            os.makedirs(os.path.dirname(self._local(dst)), exist_ok=True)
            shutil.copyfile(self._local(src), self._local(dst))

    def rename(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            os.makedirs(os.path.dirname(self._local(dst)), exist_ok=True)
            os.replace(self._local(src), self._local(dst))

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for path in paths:
            if self.exists(path):
                os.remove(self._local(path))
            else:  # a "folder": every object under the prefix
                for meta in list(self._list(path.rstrip("/") + "/")):
                    os.remove(self._local(meta.path))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_output_on_an_object_store_filesystem_matches_local_output(
        site, direct_outputs, tmp_path):
    _, feeds = site
    backing = tmp_path / "bucket"
    backing.mkdir()
    _ObjectStoreFileSystem.root = str(backing)
    url = f"{_ObjectStoreFileSystem.SCHEME}://bucket/news"
    summary, outputs = _ingest(feeds, url, "store", "--runner=DirectRunner")
    assert summary.balanced, summary.render()
    assert outputs == direct_outputs
    # Everything landed in the store, under the output prefix, and nowhere else.
    written = [p.relative_to(backing).as_posix() for p in backing.rglob("*") if p.is_file()]
    assert written and all(w.startswith("bucket/news/") for w in written)
    assert not list(Path.cwd().glob(f"{_ObjectStoreFileSystem.SCHEME}*"))


# -- the streaming pipeline ------------------------------------------------------------------

# Columns of a kept article or a dropped duplicate that do not depend on which of two feeds
# listing the same URL in the same poll was seen first: in streaming, first sightings are
# decided in arrival order, which a distributed runner does not fix.
_ORDER_FREE_ARTICLE = [c for c in ARTICLE_COLUMNS if c not in ("feed_url", "source")]
_ORDER_FREE_DUPLICATE = [c for c in DUPLICATE_COLUMNS if c != "feed_url"]


def _project(rows: list[tuple], columns: list[str], keep: list[str]) -> list[tuple]:
    return sorted((tuple(r[columns.index(c)] for c in keep) for r in rows), key=repr)


@pytest.mark.slow
@pytest.mark.portable
@pytest.mark.timeout(300)
def test_streaming_ingest_on_portable_runner_loopback_with_stop_time(
        site, direct_outputs, tmp_path):
    """``ingest --streaming`` (PeriodicImpulse polling, keyed state and timers, windowed
    sinks) through PortableRunner LOOPBACK, ending by itself at ``--stop-after``."""
    server, feeds = site
    server.clear_requests()
    summary, outputs = _ingest(
        feeds, tmp_path / "out", "stream", "--streaming", "--poll-interval=1",
        "--stop-after=4", "--runner=PortableRunner", "--job_endpoint=embed",
        "--environment_type=LOOPBACK")
    assert summary.balanced, summary.render()
    # Several polls, answered 304 after the first: the per-feed state carried validators.
    polls = [r for r in server.requests if r.path == "/gazette/feed.xml"]
    assert len(polls) >= 2
    assert [r.status for r in polls[1:]] == [304] * (len(polls) - 1)
    assert all(r.conditional for r in polls[1:])
    # However many polls and windows: each article once, as in the batch run.
    assert (_project(outputs["articles"], ARTICLE_COLUMNS, _ORDER_FREE_ARTICLE)
            == _project(direct_outputs["articles"], ARTICLE_COLUMNS, _ORDER_FREE_ARTICLE))
    assert (_project(outputs["duplicates"], DUPLICATE_COLUMNS, _ORDER_FREE_DUPLICATE)
            == _project(direct_outputs["duplicates"], DUPLICATE_COLUMNS,
                        _ORDER_FREE_DUPLICATE))
    assert outputs["errors"] == direct_outputs["errors"]
