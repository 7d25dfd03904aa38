"""The bundled demo corpus and the loopback server that publishes it.

``site/`` holds a small, self-contained news web: seven fictional outlets (RSS 2.0 and
Atom feeds in English, Ukrainian, Russian and German) with their article pages, one
deliberately broken feed, the feed lists (``feeds.yaml``, ``feeds.opml``, ``feeds.txt``)
and ``expected.json``, a manifest of every feed entry and what the pipeline should make of
it. Every absolute URL in the corpus is written as ``{{BASE}}/...``;
:class:`pipelines.demo.server.SiteServer` fills in its own address when it serves a file.

All outlets, bylines and stories are invented for this project; some of them retell
news of late November 2024 in fictionalised form.
"""

from pathlib import Path

SITE_DIR: Path = Path(__file__).resolve().parent / "site"
"""Root folder of the demo corpus."""

FEEDS_YAML: Path = SITE_DIR / "feeds.yaml"
"""Feed list (YAML, top-level ``feeds:``) with ``{{BASE}}`` placeholders."""

FEEDS_OPML: Path = SITE_DIR / "feeds.opml"
"""The same feed list as OPML 2.0."""

FEEDS_TXT: Path = SITE_DIR / "feeds.txt"
"""The same feed list, one URL per line."""

EXPECTED_JSON: Path = SITE_DIR / "expected.json"
"""Manifest of every feed entry in the corpus and its expected fate."""

PLACEHOLDER = "{{BASE}}"
"""Stands for the server's base URL (``http://127.0.0.1:PORT``) in every text file."""

__all__ = ["EXPECTED_JSON", "FEEDS_OPML", "FEEDS_TXT", "FEEDS_YAML", "PLACEHOLDER", "SITE_DIR"]
