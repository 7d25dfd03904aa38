"""``newsbeam demo``: serve the bundled corpus on loopback and ingest it end to end.

The demo starts :class:`~pipelines.demo.server.SiteServer` on 127.0.0.1, writes the
feed list with the server's address filled in, runs the real pipeline over real HTTP
(``--allow-private-network``, since the server is on loopback), prints the summary and
stops the server.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipelines.demo import FEEDS_YAML
from pipelines.demo.server import SiteServer

DEMO_PORT = 8731
"""The demo's loopback port. A fixed one gives the demo's articles the same URLs, and so
the same ids, in every run, so a second demo into the same folder is a true re-run and adds
nothing. When it is taken (another demo running), an ephemeral port is used instead."""


def demo_server(port: int = DEMO_PORT) -> SiteServer:
    """A started demo server on ``port``, or on an ephemeral port if that is busy."""
    try:
        return SiteServer(port=port).start()
    except OSError:
        print(f"Port {port} is busy: serving on another port, so this run's URLs "
              "differ from other demo runs'.")
        return SiteServer().start()


def demo_feeds_file(base_url: str, folder: str) -> str:
    """Writes the demo feed list with ``{{BASE}}`` resolved; returns its path."""
    text = Path(FEEDS_YAML).read_text(encoding="utf-8").replace("{{BASE}}", base_url)
    path = Path(folder) / "feeds.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_demo(output: str, beam_args: Sequence[str] = (), port: int = DEMO_PORT,
             console=None) -> int:
    """Runs the demo, serving the corpus on ``port``; returns the exit code of
    ``newsbeam ingest`` (0 when the accounting balances)."""
    from pipelines.execute import exit_code
    from pipelines.ingest import run

    with demo_server(port) as server, tempfile.TemporaryDirectory(prefix="newsbeam-demo-") as tmp:
        feeds = demo_feeds_file(server.base_url, tmp)
        print(f"Serving the demo corpus at {server.base_url}; writing to {output}")
        # One loopback server stands in for eight outlets: the per-host politeness delay
        # (1 s by default) would only slow the demo down, so it is shortened.
        _, summary = run(["--feeds", feeds, "--output", output, "--allow-private-network",
                          "--per-host-delay", "0.05", *beam_args], console=console)
    # The analytics extra (duckdb, matplotlib) is part of the test extra `make demo` installs.
    print(f"\nExplore it (pip install 'newsbeam[analytics]' outside this checkout):\n"
          f"  newsbeam sql {output} -c \"SELECT date, topic, language, count(*) FROM articles "
          f"GROUP BY ALL ORDER BY ALL\"\n"
          f"  newsbeam sql {output}                         # a DuckDB prompt: articles, "
          f"duplicates, errors, stories\n"
          f"  newsbeam report {output} --out report.html    # one HTML page with plots")
    return exit_code(summary)
