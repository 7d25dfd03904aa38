"""Controls users ask for, end to end over loopback through the real pipeline, Parquet read
back: the ``--languages`` filter, per-feed headers, cookies and basic auth with secrets
from the environment, and the HTTP proxy that keeps the private-network guard."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.demo.run import demo_feeds_file
from pipelines.demo.server import SiteServer
from pipelines.ingest import run
from transforms.extraction.language import parse_languages

pytestmark = pytest.mark.slow


def table(out: Path, name: str) -> list[dict]:
    if not (out / name).exists():
        return []
    return ds.dataset(out / name, format="parquet", partitioning="hive").to_table().to_pylist()


def feeds_file(server: SiteServer, folder: Path, outlets: list[str]) -> str:
    """The demo feed list cut down to ``outlets`` (YAML, languages declared)."""
    full = Path(demo_feeds_file(server.base_url, str(folder))).read_text(encoding="utf-8")
    blocks = full.split("\n  - ")
    kept = [blocks[0]] + [b for b in blocks[1:] if any(f"/{o}/" in b for o in outlets)]
    path = folder / "some.yaml"
    path.write_text("\n  - ".join(kept), encoding="utf-8")
    return str(path)


def test_parse_languages():
    assert parse_languages(" en, UK,und ") == {"en", "uk", "und"}
    with pytest.raises(ValueError, match="'english'"):
        parse_languages("en,english")
    with pytest.raises(ValueError, match="at least one"):
        parse_languages(" , ")


def test_languages_filter_leaves_other_languages_out_with_one_error_each(tmp_path):
    out = tmp_path / "out"
    with SiteServer() as server:
        feeds = feeds_file(server, tmp_path, ["harbor-ledger", "dniprovyi-visnyk",
                                              "vostochny-kurier", "rheinblick"])
        _, s = run(["--feeds", feeds, "--output", str(out), "--allow-private-network",
                    "--per-host-delay", "0", "--story-similarity", "lexical",
                    "--languages", "en,uk"], quiet=True)
    articles, errors = table(out, "articles"), table(out, "errors")
    assert articles and {a["language"] for a in articles} == {"en", "uk"}
    filtered = [e for e in errors if e["reason"] == "language_filtered"]
    assert filtered and all(e["level"] == "entry" and e["stage"] == "filter_language"
                            for e in filtered)
    assert {e["feed_url"].split("/")[-2] for e in filtered} == {"vostochny-kurier",
                                                                "rheinblick"}
    assert all("is not among --languages en,uk" in e["message"] for e in filtered)
    # Every entry read is one article, duplicate or entry error: the filtered ones too.
    assert s.balanced and s.entry_errors >= len(filtered)
    assert s.counters["articles_language_filtered"] == len(filtered)
