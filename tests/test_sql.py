"""``newsbeam sql``: DuckDB views over the committed files of every table, and the
``stories`` view, on an output published through the real publish step."""

from __future__ import annotations

import datetime as dt
import io
import json

import duckdb
import pytest

from pipelines import cli
from pipelines import sql as nsql
from tests.analytics_output import (
    ARTICLES,
    DUPLICATES,
    DUPLICATES_V1,
    ERRORS,
    ERRORS_V1,
    HOSTILE_TITLE,
    build_output,
)
from transforms.sinks import publish as pub


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return build_output(str(tmp_path_factory.mktemp("out")))


def test_committed_files_match_the_publish_protocol(out):
    for table in ("articles", "duplicates", "errors"):
        assert nsql.committed_files(out, table) == pub.committed_files(out, table)
    assert not any("part-killed" in p for p in nsql.committed_files(out, "articles"))


def test_views_hold_committed_rows_with_typed_partitions(out):
    con = nsql.connect(out)
    counts = {t: con.sql(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("articles", "duplicates", "errors")}
    # The uncommitted article file is not seen; a plain glob would see it.
    assert counts == {"articles": len(ARTICLES), "duplicates": len(DUPLICATES_V1 + DUPLICATES),
                      "errors": len(ERRORS_V1 + ERRORS)}
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/articles/**/*.parquet')"
                      ).fetchone()[0] == len(ARTICLES) + 1
    types = dict(con.sql("SELECT column_name, data_type FROM information_schema.columns "
                         "WHERE table_name = 'articles'").fetchall())
    assert (types["date"], types["topic"], types["published_at"], types["authors"]) == (
        "DATE", "VARCHAR", "TIMESTAMP WITH TIME ZONE", "VARCHAR[]")
    assert con.sql("SELECT min(date), max(date) FROM articles").fetchone() == (
        dt.date(2024, 11, 22), dt.date(2024, 11, 25))


def test_older_files_without_source_and_language_read_as_null(out):
    con = nsql.connect(out)
    got = con.sql("SELECT article_id, source, language, schema_version FROM duplicates "
                  "ORDER BY article_id").fetchall()
    assert got == [("d-grain", None, None, 2), ("d-kursk", "Tallis Market Report", "en", 2),
                   ("s-rates", "Tallis Market Report", "ru", 2)]
    got = con.sql("SELECT reason, source, language FROM errors ORDER BY url").fetchall()
    assert got == [("malformed_feed", "Broken Outlet", None),
                   ("http_404", "The Harbor Ledger", "en"), ("http_404", None, None),
                   ("timeout", None, None)]


def test_stories_view_one_row_per_story(out):
    con = nsql.connect(out)
    con.execute("SET TimeZone = 'UTC'")
    rel = con.sql("SELECT story_id, lead_article_id, title, lead_source, topic, first_seen, "
                  "last_seen, article_count, copy_count, outlet_count, outlets, "
                  "language_count, languages FROM stories ORDER BY story_id")
    rows = {r[0]: r for r in rel.fetchall()}
    utc = dt.UTC
    assert rows["s-kursk"] == (
        "s-kursk", "s-kursk", "Soldiers in Kursk told to hold the line", "The Harbor Ledger",
        "conflict-war-peace", dt.datetime(2024, 11, 22, 8, tzinfo=utc),
        dt.datetime(2024, 11, 23, 9, 30, tzinfo=utc), 3, 1, 4,
        ["Dniprovyi Visnyk", "Rheinblick", "Tallis Market Report", "The Harbor Ledger"],
        3, ["de", "en", "uk"])
    # A copy from a version 1 file counts, with no outlet or language to add.
    assert rows["s-grain"][7:] == (1, 1, 1, ["The Harbor Ledger"], 1, ["en"])
    # A url re-listing is the same page, not a copy; no published time: the fetch time.
    assert rows["s-rates"][5:] == (
        dt.datetime(2024, 11, 24, 6, tzinfo=utc), dt.datetime(2024, 11, 24, 6, tzinfo=utc),
        1, 0, 1, ["Vostochny Kurier"], 1, ["ru"])
    assert rows["s-cup"][2] == HOSTILE_TITLE and rows["s-cup"][7:10] == (2, 0, 2)
    assert len(rows) == len({a.story_id for a in ARTICLES}) == 4


def test_an_output_with_no_rows_still_has_typed_views(tmp_path):
    (tmp_path / "_runs").mkdir()
    con = nsql.connect(str(tmp_path))
    for view in ("articles", "duplicates", "errors", "stories"):
        assert con.sql(f"SELECT count(*) FROM {view}").fetchone()[0] == 0
    assert con.sql("SELECT typeof(date), typeof(source) FROM duplicates").fetchall() == []
    types = dict(con.sql("SELECT column_name, data_type FROM information_schema.columns "
                         "WHERE table_name = 'duplicates'").fetchall())
    assert types["date"] == "DATE" and types["language"] == "VARCHAR"


def test_command_runs_queries_in_each_format(out, capsys):
    assert nsql.main([out, "-c", "SELECT story_id, article_count FROM stories "
                      "ORDER BY story_id; SELECT 42 AS answer", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "story_id,article_count", "s-cup,2", "s-grain,1", "s-kursk,3", "s-rates,1",
        "answer", "42"]
    assert cli.main(["sql", out, "-c", "SELECT level, count(*) AS n FROM duplicates "
                     "GROUP BY ALL ORDER BY level", "--format", "json"]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.splitlines()] == [
        {"level": "content", "n": 1}, {"level": "near", "n": 1}, {"level": "url", "n": 1}]
    assert nsql.main([out, "-c", "SELECT count(*) AS articles FROM articles"]) == 0
    table = capsys.readouterr().out
    assert "articles" in table and f"│ {len(ARTICLES):>8} │" in table


def test_file_of_statements_and_printed_views(out, tmp_path, capsys):
    script = tmp_path / "q.sql"
    script.write_text("-- outlets per story; a ';' in a string does not split it\n"
                      "SELECT story_id, outlet_count, ';' AS sep FROM stories\n"
                      "WHERE outlet_count > 1 ORDER BY story_id;\n", encoding="utf-8")
    assert nsql.main([out, "-f", str(script), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["story_id,outlet_count,sep",
                                                    "s-cup,2,;", "s-kursk,4,;"]
    assert nsql.main([out, "--views"]) == 0
    printed = capsys.readouterr().out
    con = duckdb.connect()
    for statement in nsql.split_statements(printed):
        con.execute(statement)  # any DuckDB client can run them
    assert con.sql("SELECT count(*) FROM stories").fetchone()[0] == 4


def test_prompt_reads_statements_and_keeps_going_after_an_error(out):
    con = nsql.connect(out)
    stdin = io.StringIO(".tables\nSELECT count(*) AS n\nFROM errors;\nSELECT nope;\n"
                        "SELECT 'after' AS still_here;\n/* a; b */ SELECT 2 AS two; -- done\n"
                        ".quit\nSELECT 'not run';\n")
    shown = io.StringIO()
    assert nsql.shell(con, out, stdin=stdin, out=shown, interactive=False, fmt="csv") == 1
    lines = shown.getvalue().splitlines()
    assert lines[:4] == [f"articles    {len(ARTICLES):>9,} rows",
                         f"duplicates  {3:>9,} rows", f"errors      {4:>9,} rows",
                         f"stories     {4:>9,} rows"]
    assert lines[4:6] == ["n", "4"]
    assert lines[6].startswith("error: ") and "nope" in lines[6]
    assert lines[7:] == ["still_here", "after", "two", "2"]


def test_bad_input_gets_one_line_and_exit_code(out, tmp_path, capsys):
    assert nsql.main([str(tmp_path / "missing"), "-c", "SELECT 1"]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert nsql.main([str(tmp_path / "plain"), "-c", "SELECT 1"]) == 2
    assert "not a newsbeam output" in capsys.readouterr().err
    assert nsql.main([out, "-c", "SELECT * FROM no_such_table"]) == 1
    assert "no_such_table" in capsys.readouterr().err
    assert nsql.main([out, "-f", str(tmp_path / "none.sql")]) == 2


def test_console_script_reads_piped_statements(out):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("newsbeam")
    done = subprocess.run(
        [str(script), "sql", out, "--format", "csv"], capture_output=True, text=True,
        input="SELECT count(*) AS stories FROM stories;\nSELECT bad;\n", timeout=300)
    assert done.returncode == 1  # a piped statement failed
    assert done.stdout.splitlines()[:2] == ["stories", "4"]
    assert "error: " in done.stdout
