"""``newsbeam sql DIR``: DuckDB over a committed output, with one view per table.

Views (all read the files that commit manifests name, as
:func:`transforms.sinks.publish.committed_files` lists them, so a run being published or
one killed half-way is never half visible):

- ``articles``, ``duplicates``, ``errors``: the tables, with their partition columns
  (``date`` as DATE, ``topic`` as VARCHAR) and every column of the current schema, even
  where older files lack one (``source`` and ``language`` of duplicates and errors before
  schema version 2 read as null);
- ``stories``: one row per story, derived from ``articles`` and ``duplicates`` at read
  time (see :data:`STORIES_VIEW`).

Examples::

    newsbeam sql demo-output                       # interactive; end a statement with ;
    newsbeam sql demo-output -c "SELECT * FROM stories ORDER BY outlet_count DESC LIMIT 5"
    newsbeam sql demo-output -f queries.sql --format csv
    newsbeam sql demo-output --views > views.sql   # the CREATE VIEW statements, to run
                                                   # in any DuckDB session

The views name the committed files at the moment they are created: a run that commits
later is seen by the next ``newsbeam sql`` (or by printing the views again).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from schemas import ARTICLE_SCHEMA, DUPLICATE_SCHEMA, ERROR_SCHEMA

TABLE_SCHEMAS = {"articles": ARTICLE_SCHEMA, "duplicates": DUPLICATE_SCHEMA,
                 "errors": ERROR_SCHEMA}
PARTITIONS = {"articles": (("date", "DATE"), ("topic", "VARCHAR")),
              "duplicates": (("date", "DATE"),), "errors": (("date", "DATE"),)}
"""Hive partition columns per table and the DuckDB type each is read as."""

COPY_LEVELS = ("content", "near", "echo")
"""Duplicate levels that are another outlet's copy or retelling of a story's article
(``url`` and ``guid`` duplicates are the same page listed again)."""

STORIES_VIEW = f"""
CREATE OR REPLACE VIEW stories AS
WITH members AS (
    SELECT story_id, article_id, is_story_lead, title, url, source, language, topic,
           coalesce(published_at, fetched_at) AS seen_at
    FROM articles
),
copies AS (
    -- Copies dropped as duplicates count in the story of the article they copy.
    SELECT m.story_id, d.source, d.language
    FROM duplicates d JOIN members m ON d.duplicate_of = m.article_id
    WHERE d.level IN ({", ".join(f"'{x}'" for x in COPY_LEVELS)})
),
outlets AS (
    SELECT story_id, source, language FROM members
    UNION ALL
    SELECT story_id, source, language FROM copies
)
SELECT
    m.story_id,
    coalesce(any_value(m.article_id) FILTER (WHERE m.is_story_lead),
             arg_min(m.article_id, m.seen_at)) AS lead_article_id,
    coalesce(any_value(m.title) FILTER (WHERE m.is_story_lead),
             arg_min(m.title, m.seen_at)) AS title,
    coalesce(any_value(m.source) FILTER (WHERE m.is_story_lead),
             arg_min(m.source, m.seen_at)) AS lead_source,
    coalesce(any_value(m.url) FILTER (WHERE m.is_story_lead),
             arg_min(m.url, m.seen_at)) AS lead_url,
    coalesce(any_value(m.topic) FILTER (WHERE m.is_story_lead),
             arg_min(m.topic, m.seen_at)) AS topic,
    min(m.seen_at) AS first_seen,
    max(m.seen_at) AS last_seen,
    count(*) AS article_count,
    coalesce(c.copy_count, 0) AS copy_count,
    o.outlet_count,
    o.outlets,
    o.language_count,
    o.languages
FROM members m
LEFT JOIN (SELECT story_id, count(*) AS copy_count FROM copies GROUP BY story_id) c
    USING (story_id)
JOIN (
    SELECT story_id,
           count(DISTINCT source) FILTER (WHERE source IS NOT NULL AND source <> '')
               AS outlet_count,
           list_sort(list(DISTINCT source) FILTER (WHERE source IS NOT NULL AND source <> ''))
               AS outlets,
           count(DISTINCT language) FILTER (WHERE language IS NOT NULL AND language <> 'und')
               AS language_count,
           list_sort(list(DISTINCT language)
                     FILTER (WHERE language IS NOT NULL AND language <> 'und')) AS languages
    FROM outlets GROUP BY story_id
) o USING (story_id)
GROUP BY m.story_id, c.copy_count, o.outlet_count, o.outlets, o.language_count, o.languages
""".strip()
"""One row per story: its lead (the article that opened it; else its earliest article),
first and last time seen (``published_at``, else ``fetched_at``, over its articles),
articles written, copies dropped as duplicates, and the outlets and languages of both
(``und`` left out)."""


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type of a column of the on-disk schemas."""
    if pa.types.is_list(arrow_type):
        return duckdb_type(arrow_type.value_type) + "[]"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    simple = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
              pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}
    return simple[arrow_type]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_view(table: str, files: Sequence[str]) -> str:
    """``CREATE VIEW`` for one table over ``files``.

    An empty, typed ``SELECT`` of every column of the current schema is combined with
    the files by column name: so the view has every column with its type even when no
    file (or only an older file) holds it, and an output with no file of a table still
    has the view.
    """
    columns = [f"CAST(NULL AS {duckdb_type(f.type)}) AS {f.name}"
               for f in TABLE_SCHEMAS[table]]
    columns += [f"CAST(NULL AS {kind}) AS {name}" for name, kind in PARTITIONS[table]]
    typed = f"SELECT {', '.join(columns)} WHERE false"
    if not files:
        return f"CREATE OR REPLACE VIEW {table} AS {typed}"
    hive_types = ", ".join(f"{_quote(name)}: {kind}" for name, kind in PARTITIONS[table])
    listed = "[" + ", ".join(_quote(p) for p in files) + "]"
    return (f"CREATE OR REPLACE VIEW {table} AS {typed}\nUNION ALL BY NAME\n"
            f"SELECT * FROM read_parquet({listed}, hive_partitioning = true, "
            f"hive_types = {{{hive_types}}}, union_by_name = true)")


def committed_files(root: str, table: str, attempts: int = 10) -> list[str]:
    """Files of ``table`` that commit manifests name and that exist, sorted.

    The protocol of :func:`transforms.sinks.publish.committed_files` (manifests read
    before the files are checked and listed again after; start over if they changed),
    for local folders without importing Beam, whose import alone took 6 s on a loaded
    machine; other roots (``gs://``, ``s3://``) go through Beam's file systems there.
    """
    if "://" in root:
        from transforms.sinks.publish import committed_files as through_beam

        return through_beam(root, table, attempts)
    root = root.rstrip("/") or "/"
    pattern = os.path.join(glob.escape(root), "_runs", "*.json")

    def manifests() -> list[str]:
        return sorted(p for p in glob.glob(pattern) if not p.endswith(".intent.json"))

    for _ in range(attempts):
        before = manifests()
        named: set[str] = set()
        for path in before:
            try:
                with open(path, encoding="utf-8") as f:
                    named.update(rel for rel, _ in json.load(f).get("tables", {}).get(table, []))
            except FileNotFoundError:
                continue
        present = sorted(p for p in (os.path.join(root, rel) for rel in named)
                         if os.path.isfile(p))
        if manifests() == before:
            return present
    raise ValueError(f"{root}: the set of committed runs kept changing while reading")


STORY_COLUMNS = {
    "articles": ("article_id", "story_id", "is_story_lead", "title", "url", "source",
                 "language", "topic", "published_at", "fetched_at", "date"),
    "duplicates": ("duplicate_of", "level", "source", "language"),
    "errors": (),
}
"""Columns the ``stories`` view reads from each table."""


def views(root: str, load: dict[str, Sequence[str]] | None = None) -> list[str]:
    """The statements that create the views over the committed files of ``root``.

    ``load`` (table → columns): read those columns of each table once into a temporary
    table of the table's name instead, for many queries in a row. Every query over a view
    opens every file again, at a cost per file that outweighs the rows when files are
    small (``bench/bench_report.py``); fewer columns read is less of it.
    """
    root = os.path.abspath(root) if "://" not in root else root
    out = []
    for table in TABLE_SCHEMAS:
        statement = table_view(table, committed_files(root, table))
        if load is not None:
            columns = list(dict.fromkeys([*STORY_COLUMNS[table], *load.get(table, ())]))
            statement = statement.replace(f"CREATE OR REPLACE VIEW {table} AS",
                                          f"CREATE OR REPLACE VIEW _{table}_files AS", 1)
            statement += (f";\nCREATE OR REPLACE TEMP TABLE {table} AS "
                          f"SELECT {', '.join(columns) or '*'} FROM _{table}_files")
        out.append(statement)
    return [*out, STORIES_VIEW]


def check_output(root: str) -> None:
    """Raises ``ValueError`` with a clear message when ``root`` is not a newsbeam output."""
    if "://" in root:
        return
    if not os.path.isdir(root):
        raise ValueError(f"{root}: no such folder")
    if not any(os.path.isdir(os.path.join(root, d)) for d in (*TABLE_SCHEMAS, "_runs")):
        raise ValueError(f"{root}: not a newsbeam output (no articles/, duplicates/, "
                         "errors/ or _runs/ in it)")


def connect(root: str, database: str = ":memory:",
            load: dict[str, Sequence[str]] | None = None) -> Any:
    """A DuckDB connection with the views over ``root``'s committed output (``load``: see
    :func:`views`)."""
    import duckdb

    check_output(root)
    con = duckdb.connect(database)
    for statement in views(root, load):
        con.execute(statement)
    return con


def _scan(text: str) -> tuple[list[str], str]:
    """SQL text → (statements ended by ``;``, the text after the last one).

    ``;`` inside quotes, ``--`` line comments and ``/* */`` block comments does not end a
    statement; comments are dropped.
    """
    statements, current, i, n = [], [], 0, len(text)
    quote: str | None = None
    while i < n:
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            current.append(ch)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            current.append(" ")
            continue
        elif ch == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    return [s for s in statements if s], "".join(current).strip()


def split_statements(text: str) -> list[str]:
    """SQL text → statements, split on ``;`` outside quotes and comments."""
    statements, tail = _scan(text)
    return [*statements, tail] if tail else statements


def render(result: Any, fmt: str, max_rows: int) -> str:
    """A query result as text: DuckDB's box table, CSV or JSON lines."""
    if result is None:
        return ""
    if fmt == "table":
        return _box(result, max_rows if max_rows > 0 else 1 << 62)
    import csv
    import io
    import json

    names = list(result.columns)
    rows = result.fetchall()
    buf = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
    else:
        for row in rows:
            buf.write(json.dumps(dict(zip(names, row, strict=True)), default=str,
                                 ensure_ascii=False) + "\n")
    return buf.getvalue().rstrip("\n")


def _box(relation: Any, max_rows: int) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        relation.show(max_rows=max_rows, max_width=200)
    return buf.getvalue().rstrip("\n")


def run_statements(con: Any, text: str, fmt: str = "table", max_rows: int = 40,
                   out: Any = None) -> None:
    """Runs each statement of ``text`` and prints the results of those that return rows."""
    out = out or sys.stdout
    for statement in split_statements(text):
        relation = con.sql(statement)
        shown = render(relation, fmt, max_rows)
        if shown:
            print(shown, file=out)


HELP = """Views: articles, duplicates, errors, stories. End a statement with ';'.
  .tables          list the views and their row counts
  .schema NAME     columns of a view
  .quit            leave (or Ctrl-D)"""


def _meta(con: Any, line: str, out: Any) -> bool:
    """Handles a dot command; returns False for ``.quit``."""
    word, _, arg = line.strip().partition(" ")
    if word in (".quit", ".exit", ".q"):
        return False
    if word == ".tables":
        for name in (*TABLE_SCHEMAS, "stories"):
            n = con.sql(f"SELECT count(*) FROM {name}").fetchone()[0]
            print(f"{name:<11} {n:>9,} rows", file=out)
    elif word == ".schema" and arg.strip():
        print(render(con.sql(f"DESCRIBE {arg.strip()}"), "table", 100), file=out)
    else:
        print(HELP, file=out)
    return True


def shell(con: Any, root: str, stdin: Any = None, out: Any = None, interactive: bool = True,
          fmt: str = "table", max_rows: int = 40) -> int:
    """A small SQL prompt over the views; errors are printed and the prompt goes on."""
    import duckdb

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        print(f"newsbeam sql: {root} (DuckDB). .help for help, .quit to leave.", file=out)
    buffer: list[str] = []
    failed = 0
    while True:
        prompt = "   ...> " if buffer else "newsbeam> "
        if interactive and stdin is sys.stdin:
            try:
                line = input(prompt)
            except EOFError:
                print(file=out)
                break
        else:
            line = stdin.readline()
            if not line:
                break
        if not buffer and line.strip().startswith("."):
            if not _meta(con, line, out):
                break
            continue
        buffer.append(line)
        text = "\n".join(buffer)
        complete, tail = _scan(text)
        if tail or not complete:  # a statement still open, or only blanks and comments
            if not tail:
                buffer = []
            continue
        buffer = []
        try:
            run_statements(con, text, fmt, max_rows, out)
        except duckdb.Error as e:
            failed += 1
            print(f"error: {e}", file=out)
    if buffer and "".join(buffer).strip():
        try:
            run_statements(con, "\n".join(buffer), fmt, max_rows, out)
        except duckdb.Error as e:
            failed += 1
            print(f"error: {e}", file=out)
    return 1 if failed and not interactive else 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="newsbeam sql",
        description="Query a newsbeam output with DuckDB. Views: articles, duplicates, "
                    "errors (the committed files of each table) and stories (one row per "
                    "story). Without -c or -f: an interactive prompt (or the statements "
                    "piped on stdin).")
    parser.add_argument("output", metavar="DIR", help="The output folder of newsbeam ingest.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("-c", "--command", metavar="QUERY",
                      help="Run QUERY (one or more statements separated by ';') and exit.")
    what.add_argument("-f", "--file", metavar="FILE.sql",
                      help="Run the statements of FILE.sql and exit.")
    what.add_argument("--views", action="store_true",
                      help="Print the CREATE VIEW statements (for any DuckDB client) and exit.")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="How results are printed. Default: table.")
    parser.add_argument("--max-rows", type=int, default=40,
                        help="Rows shown per result in table format (0: all). Default: 40.")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``newsbeam sql``: exit 0, 1 when a statement failed, 2 for bad usage or input."""
    import duckdb

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_output(args.output)
        if args.views:
            print(";\n\n".join(views(args.output)) + ";")
            return 0
        con = connect(args.output)
    except (ValueError, OSError) as e:
        print(f"newsbeam sql: {e}", file=sys.stderr)
        return 2
    max_rows = args.max_rows if args.format == "table" else 0
    if args.command is not None or args.file is not None:
        try:
            if args.file is not None:
                with open(args.file, encoding="utf-8") as f:
                    text = f.read()
            else:
                text = args.command
            run_statements(con, text, args.format, max_rows)
        except OSError as e:
            print(f"newsbeam sql: {e}", file=sys.stderr)
            return 2
        except duckdb.Error as e:
            print(f"newsbeam sql: {e}", file=sys.stderr)
            return 1
        return 0
    return shell(con, args.output, interactive=sys.stdin.isatty(), fmt=args.format,
                 max_rows=max_rows)


if __name__ == "__main__":
    sys.exit(main())
