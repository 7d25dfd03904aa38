"""``newsbeam report``: the page's figures equal SQL counts over the same committed files,
and the page renders in a real headless browser (Debian's ``chromium``) with its plots,
offline, without running anything a title smuggles in."""

from __future__ import annotations

import datetime as dt
import html.parser
import re
import shutil
import subprocess

import duckdb
import pytest

from pipelines import cli
from pipelines import report as rep
from pipelines import sql as nsql
from tests.analytics_output import ARTICLES, HOSTILE_TITLE, build_output

CLOCK = (lambda: dt.datetime(2024, 11, 26, 12, 0, tzinfo=dt.UTC))  # noqa: E731


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return build_output(str(tmp_path_factory.mktemp("out")))


def sql_counts(root: str) -> dict:
    """The report's counts, queried straight from the committed files (not the views)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def scan(table: str) -> str:
        files = nsql.committed_files(root, table)
        return (f"read_parquet({files!r}, hive_partitioning = true, union_by_name = true)"
                if files else "(SELECT NULL WHERE false)")

    a, d, e = scan("articles"), scan("duplicates"), scan("errors")

    def rows(query: str) -> list:
        return [list(r) for r in con.sql(query).fetchall()]

    return {
        "articles": con.sql(f"SELECT count(*) FROM {a}").fetchone()[0],
        "duplicates": con.sql(f"SELECT count(*) FROM {d}").fetchone()[0],
        "errors": con.sql(f"SELECT count(*) FROM {e}").fetchone()[0],
        "entry_errors": con.sql(f"SELECT count(*) FROM {e} WHERE level = 'entry'").fetchone()[0],
        "stories": con.sql(f"SELECT count(DISTINCT story_id) FROM {a}").fetchone()[0],
        "outlets": con.sql(f"SELECT count(DISTINCT source) FROM {a}").fetchone()[0],
        "per_topic": rows(f"SELECT topic, count(*) FROM {a} GROUP BY 1 ORDER BY 2 DESC, 1"),
        "per_language": rows(f"SELECT language, count(*) FROM {a} GROUP BY 1 ORDER BY 2 DESC, 1"),
        "per_day": rows(f"SELECT CAST(date AS VARCHAR), count(*) FROM {a} GROUP BY 1 ORDER BY 1"),
        "leads_per_day": rows(
            f"SELECT CAST(CAST(coalesce(published_at, fetched_at) AS DATE) AS VARCHAR), "
            f"count(*) FROM {a} WHERE is_story_lead GROUP BY 1 ORDER BY 1"),
        "levels": rows(f"SELECT level, count(*) FROM {d} GROUP BY 1 ORDER BY 2 DESC, 1"),
        "reasons": rows(f"SELECT stage, reason, level, count(*) FROM {e} GROUP BY ALL "
                        "ORDER BY 4 DESC, 1, 2, 3"),
    }


def assert_figures_match_sql(data: dict, root: str) -> None:
    want = sql_counts(root)
    t = data["totals"]
    for key in ("articles", "duplicates", "errors", "entry_errors", "stories", "outlets"):
        assert t[key] == want[key], key
    assert [[r["topic"], r["articles"]] for r in data["per_topic"]] == want["per_topic"]
    assert [[r["language"], r["articles"]] for r in data["per_language"]] == want["per_language"]
    assert [[r["day"], r["articles"]] for r in data["per_day"] if r["articles"]] == want[
        "per_day"]
    assert [[r["day"], r["new_stories"]] for r in data["per_day"] if r["new_stories"]] == want[
        "leads_per_day"]
    assert [[r["level"], r["duplicates"]] for r in data["duplicates_per_level"]] == want[
        "levels"]
    assert [[r["stage"], r["reason"], r["level"], r["errors"]]
            for r in data["errors_by_reason"]] == want["reasons"]


class Figures(html.parser.HTMLParser):
    """Collects the text of every element that carries ``data-figure``."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        name = dict(attrs).get("data-figure")
        if name:
            self._open = name

    def handle_data(self, data):
        if self._open:
            self.found.append((self._open, data))
            self._open = None


def test_report_figures_equal_sql_counts(out):
    page, data = rep.build(out, clock=CLOCK)
    assert rep.read_data(page) == data
    assert_figures_match_sql(data, out)
    # Stories come from the stories view; the fixture's are known.
    assert (data["totals"]["stories"], data["totals"]["stories_multi_outlet"]) == (4, 2)
    assert [(r["story_id"], r["outlet_count"], r["article_count"], r["copy_count"])
            for r in data["top_echoes"]] == [("s-kursk", 4, 3, 1), ("s-cup", 2, 2, 0)]
    assert [(r["day"], r["articles"], r["new_stories"]) for r in data["per_day"]] == [
        ("2024-11-22", 3, 2), ("2024-11-23", 1, 0), ("2024-11-24", 2, 2), ("2024-11-25", 1, 0)]
    assert data["totals"]["articles"] == len(ARTICLES)


def test_every_number_shown_is_the_embedded_figure(out):
    page, data = rep.build(out, clock=CLOCK)
    parser = Figures()
    parser.feed(page)
    shown = parser.found
    assert len(shown) > 20
    for name, text in shown:
        table, column = name.split(".")
        if table == "totals":
            assert text == f"{data['totals'][column]:,}", name
    for table in ("per_day", "per_topic", "per_language", "top_echoes",
                  "duplicates_per_level", "errors_by_reason"):
        for column in {n.split(".")[1] for n, _ in shown if n.startswith(table + ".")}:
            assert [int(x) for n, x in shown if n == f"{table}.{column}"] == [
                r[column] for r in data[table]], (table, column)


def test_page_is_self_contained(out):
    page, _ = rep.build(out, clock=CLOCK)
    lowered = page.lower()
    # Nothing to fetch: references stay inside the page, and URLs appear only as XML
    # namespace names (which are never fetched).
    assert "src=" not in lowered and "@import" not in lowered
    assert set(re.findall(r'href="(.)', lowered)) == {"#"}
    assert set(re.findall(r"url\((.)", lowered)) <= {"#"}
    assert len(re.findall(r"https?://", lowered)) == len(
        re.findall(r'xmlns(?::\w+)?="https?://', lowered))
    assert lowered.count("<svg") == 6  # days, topics, languages, echoes, errors, levels
    assert lowered.count("<script") == 1  # the JSON block only


def chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    """Runs Debian's chromium headless, offline, with a profile of its own."""
    binary = shutil.which("chromium")
    assert binary, "chromium is needed: apt-get install -y chromium (.ci/run installs it)"
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", *args],
        capture_output=True, text=True, timeout=180, check=True)


class Dom(html.parser.HTMLParser):
    """Counts elements and keeps the text of the DOM chromium serialised."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_data(self, data):
        self.text.append(data)


def test_report_renders_in_a_headless_browser(out, tmp_path):
    page_path = tmp_path / "report.html"
    assert rep.main([out, "--out", str(page_path)]) == 0
    data = rep.read_data(page_path.read_text(encoding="utf-8"))
    dom_html = chromium("--dump-dom", page_path.as_uri(), tmp_path=tmp_path).stdout
    dom = Dom()
    dom.feed(dom_html)
    # Parsed by the browser: six plots with their bars and labels, one script (the data
    # block: the hostile title's </script> did not end it), no <b> smuggled in.
    assert dom.tags.get("svg") == 6 and dom.tags.get("path", 0) > 20
    assert dom.tags.get("script") == 1 and "b" not in dom.tags
    text = "".join(dom.text)
    assert HOSTILE_TITLE in text
    for label in ("conflict-war-peace", "http_404", "Tallis Market Report", "new stories"):
        assert label in text, label
    assert rep.read_data(dom_html) == data
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,2400", "--hide-scrollbars",
             page_path.as_uri(), tmp_path=tmp_path)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (2400, 1100)
    # Not a blank page: the plots' colours are there (the red of the echo bars).
    red = (abs(pixels[..., 0] - 0xd1 / 255) < 0.02) & (abs(pixels[..., 1] - 0x49 / 255) < 0.02)
    assert red.sum() > 500


def test_report_command(out, tmp_path, capsys):
    target = tmp_path / "r.html"
    assert cli.main(["report", out, "--out", str(target)]) == 0
    assert f"{len(ARTICLES)} articles, 4 stories" in capsys.readouterr().out
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert rep.main([str(tmp_path / "missing"), "--out", str(target)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert rep.main([out, "--out", str(tmp_path / "no" / "dir" / "r.html")]) == 2


def test_report_of_an_empty_output(tmp_path):
    (tmp_path / "_runs").mkdir()
    page, data = rep.build(str(tmp_path), clock=CLOCK)
    assert data["totals"]["articles"] == 0 and data["per_day"] == []
    assert "No articles yet." in page and "No errors." in page
