"""``newsbeam report DIR``: one self-contained HTML page about a committed output.

The page shows stories over time, articles per topic and per language, the stories told
by most outlets (top echoes), duplicates per level and errors by reason, as plots and
tables. It needs no network and no other file: the CSS is inline and the plots are
inline SVG drawn by matplotlib. Every number on the page comes from the DuckDB views of
:mod:`pipelines.sql` over the files that commit manifests name, and the page carries
them all in a JSON block (``<script type="application/json" id="newsbeam-report-data">``)
so that a program can read them back::

    newsbeam report demo-output --out report.html
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import io
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

DATA_ID = "newsbeam-report-data"
"""``id`` of the JSON block holding every figure of the page."""

TOP_ECHOES = 10

QUERIES = {
    "totals": """
        SELECT
          (SELECT count(*) FROM articles) AS articles,
          (SELECT count(*) FROM duplicates) AS duplicates,
          (SELECT count(*) FROM errors) AS errors,
          (SELECT count(*) FROM errors WHERE level = 'entry') AS entry_errors,
          (SELECT count(*) FROM errors WHERE level = 'feed') AS feed_errors,
          (SELECT count(*) FROM stories) AS stories,
          (SELECT count(*) FROM stories WHERE outlet_count >= 2) AS stories_multi_outlet,
          (SELECT count(DISTINCT source) FROM articles) AS outlets,
          (SELECT count(DISTINCT language) FROM articles) AS languages,
          (SELECT min(date) FROM articles) AS first_day,
          (SELECT max(date) FROM articles) AS last_day
    """,
    "per_day": """
        WITH a AS (SELECT date AS day, count(*) AS articles FROM articles GROUP BY ALL),
             s AS (SELECT CAST(first_seen AS DATE) AS day, count(*) AS new_stories
                   FROM stories GROUP BY ALL)
        SELECT day, coalesce(articles, 0) AS articles, coalesce(new_stories, 0) AS new_stories
        FROM a FULL JOIN s USING (day) ORDER BY day
    """,
    "per_topic": "SELECT topic, count(*) AS articles FROM articles GROUP BY ALL "
                 "ORDER BY articles DESC, topic",
    "per_language": "SELECT language, count(*) AS articles FROM articles GROUP BY ALL "
                    "ORDER BY articles DESC, language",
    "top_echoes": f"""
        SELECT story_id, title, lead_source, topic, first_seen, last_seen, article_count,
               copy_count, outlet_count, outlets, language_count, languages
        FROM stories WHERE outlet_count >= 2
        ORDER BY outlet_count DESC, article_count + copy_count DESC, first_seen, story_id
        LIMIT {TOP_ECHOES}
    """,
    "duplicates_per_level": "SELECT level, count(*) AS duplicates FROM duplicates "
                            "GROUP BY ALL ORDER BY duplicates DESC, level",
    "errors_by_reason": "SELECT stage, reason, level, count(*) AS errors FROM errors "
                        "GROUP BY ALL ORDER BY errors DESC, stage, reason, level",
}
"""The queries behind the page, over the views of :mod:`pipelines.sql`."""


COLUMNS = {"articles": ("date", "topic", "language", "source"),
           "duplicates": ("level",), "errors": ("stage", "reason", "level")}
"""Columns the queries read beyond those of the stories view."""


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def figures(con: Any) -> dict[str, Any]:
    """Every figure of the report, as plain JSON-ready values."""
    con.execute("SET TimeZone = 'UTC'")
    out: dict[str, Any] = {}
    for name, query in QUERIES.items():
        relation = con.sql(query)
        columns = list(relation.columns)
        rows = [{c: _plain(v) for c, v in zip(columns, row, strict=True)}
                for row in relation.fetchall()]
        out[name] = rows[0] if name == "totals" else rows
    return out


# -- plots -------------------------------------------------------------------------------

_COLOURS = ("#2f6690", "#d1495b", "#3a7d44", "#edae49", "#6c4f77")


def _svg(fig: Any, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # The RDF block only names matplotlib and the SVG type: not needed inline.
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)
    # Scales with the page; the label is what screen readers say.
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" '
                                 'class="plot" ', 1)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Deterministic SVG ids; text kept as text (the browser draws it with its own fonts,
    # and it stays searchable: three times faster than drawing glyphs as paths); labels
    # are data, never TeX.
    plt.rcParams.update({"svg.hashsalt": "newsbeam", "svg.fonttype": "none",
                         "text.parse_math": False, "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def bar_plot(labels: Sequence[str], values: Sequence[int], label: str,
             colour: str = _COLOURS[0], width: float = 4.4) -> str:
    """A horizontal bar chart as inline SVG, largest first from the top."""
    plt = _pyplot()
    height = max(1.2, 0.28 * len(labels) + 0.6)
    fig, ax = plt.subplots(figsize=(width, height))
    positions = list(range(len(labels)))[::-1]
    bars = ax.barh(positions, values, color=colour)
    ax.set_yticks(positions, [str(x) for x in labels])
    ax.bar_label(bars, padding=3)
    ax.set_xlabel(label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _svg(fig, label)


def day_plot(per_day: list[dict[str, Any]]) -> str:
    """Articles and new stories per day, side by side, as inline SVG."""
    plt = _pyplot()
    days = [dt.date.fromisoformat(r["day"]) for r in per_day]
    fig, ax = plt.subplots(figsize=(7.2, 2.6))
    x = list(range(len(days)))
    ax.bar([i - 0.2 for i in x], [r["articles"] for r in per_day], width=0.4,
           color=_COLOURS[0], label="articles")
    ax.bar([i + 0.2 for i in x], [r["new_stories"] for r in per_day], width=0.4,
           color=_COLOURS[1], label="new stories")
    ax.legend(frameon=False)
    ax.set_ylabel("per day (UTC)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    step = max(1, len(days) // 12)
    ax.set_xticks(x[::step], [d.strftime("%d %b %Y") for d in days][::step])
    fig.autofmt_xdate()
    return _svg(fig, "articles and new stories per day")


# -- page -----------------------------------------------------------------------------------

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.sub{color:#5b6475;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(112px,1fr));gap:10px}
.card{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:10px 12px}
.card .figure{display:block;font-size:24px;font-weight:600}
.card .name{color:#5b6475;font-size:13px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:6px 18px 14px;
margin-top:16px}
.plot{max-width:100%;height:auto}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:760px){.pair{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eceef2;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#5b6475;font-style:italic}
footer{color:#5b6475;font-size:12px;margin-top:24px}
""".strip()

_CARDS = (("articles", "articles"), ("stories", "stories"),
          ("stories_multi_outlet", "stories told by 2+ outlets"), ("outlets", "outlets"),
          ("languages", "languages"), ("duplicates", "duplicates"),
          ("errors", "errors"))


def _table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]],
           name: str) -> str:
    """An HTML table; each number cell carries ``data-figure`` with its table and column."""
    head = "".join(f'<th class="{"n" if _numeric(rows, c) else ""}">{html.escape(t)}</th>'
                   for c, t in columns)
    body = []
    for row in rows:
        cells = []
        for c, _ in columns:
            value = row[c]
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value)
            elif c in _TIMES and value:
                value = value[:16].replace("T", " ")
            if _numeric(rows, c):
                cells.append(f'<td class="n" data-figure="{name}.{c}">{value}</td>')
            else:
                cells.append(f"<td>{html.escape('' if value is None else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table data-table="{name}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


_TIMES = ("first_seen", "last_seen")


def _numeric(rows: list[dict[str, Any]], column: str) -> bool:
    return bool(rows) and all(isinstance(r[column], int) and not isinstance(r[column], bool)
                              for r in rows)


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


def render_html(data: dict[str, Any], root: str, generated_at: dt.datetime) -> str:
    """The report page for ``data`` (from :func:`figures`)."""
    t = data["totals"]
    cards = "".join(
        f'<div class="card"><span class="figure" data-figure="totals.{key}">{t[key]:,}</span>'
        f'<span class="name">{html.escape(label)}</span></div>' for key, label in _CARDS)
    span = (f"{t['first_day']} to {t['last_day']}" if t["first_day"] else "no articles")
    sections = []

    per_day = data["per_day"]
    sections.append("<section><h2>Stories over time</h2>" + (
        day_plot(per_day) + _table(per_day, (("day", "day (UTC)"), ("articles", "articles"),
                                             ("new_stories", "new stories")), "per_day")
        if per_day else _empty("No articles yet.")) + "</section>")

    topic, language = data["per_topic"], data["per_language"]
    topic_html = (bar_plot([r["topic"] for r in topic], [r["articles"] for r in topic],
                           "articles per topic", _COLOURS[2])
                  + _table(topic, (("topic", "topic"), ("articles", "articles")), "per_topic")
                  if topic else _empty("No articles yet."))
    language_html = (bar_plot([r["language"] for r in language],
                              [r["articles"] for r in language], "articles per language",
                              _COLOURS[0])
                     + _table(language, (("language", "language"), ("articles", "articles")),
                              "per_language") if language else _empty("No articles yet."))
    sections.append('<section class="pair"><div><h2>Articles per topic</h2>'
                    f"{topic_html}</div><div><h2>Articles per language</h2>{language_html}"
                    "</div></section>")

    echoes = data["top_echoes"]
    if echoes:
        labels = [_short(r["title"] or r["story_id"], 48) for r in echoes]
        echo_html = bar_plot(labels, [r["outlet_count"] for r in echoes],
                             "outlets telling the story", _COLOURS[1], 6.4) + _table(
            echoes, (("title", "lead title"), ("lead_source", "lead outlet"),
                     ("first_seen", "first seen (UTC)"), ("outlet_count", "outlets"),
                     ("article_count", "articles"), ("copy_count", "copies"),
                     ("outlets", "outlet names"), ("languages", "languages")), "top_echoes")
    else:
        echo_html = _empty("No story has been told by two outlets or more.")
    sections.append("<section><h2>Top echoes across outlets</h2>"
                    '<p class="sub">Stories told by two outlets or more, most outlets first '
                    "(articles written plus copies dropped as duplicates).</p>"
                    f"{echo_html}</section>")

    levels = data["duplicates_per_level"]
    errors = data["errors_by_reason"]
    level_html = (bar_plot([r["level"] for r in levels], [r["duplicates"] for r in levels],
                           "duplicates per level", _COLOURS[4])
                  + _table(levels, (("level", "level"), ("duplicates", "duplicates")),
                           "duplicates_per_level") if levels else _empty("No duplicates."))
    if errors:
        reasons: dict[str, int] = {}
        for r in errors:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["errors"]
        ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        error_html = bar_plot([k for k, _ in ordered], [v for _, v in ordered],
                              "errors per reason", _COLOURS[3]) + _table(
            errors, (("stage", "stage"), ("reason", "reason"), ("level", "level"),
                     ("errors", "errors")), "errors_by_reason")
    else:
        error_html = _empty("No errors.")
    sections.append('<section class="pair"><div><h2>Errors by reason</h2>'
                    f"{error_html}</div><div><h2>Duplicates per level</h2>{level_html}"
                    "</div></section>")

    payload = json.dumps(data, ensure_ascii=False, sort_keys=True)
    # Inside <script>, markup in the data ("</script>", "<!--") could end or change the
    # element: JSON's \\u escapes keep every such character out of the HTML parser's way.
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>newsbeam report: {html.escape(os.path.basename(root.rstrip('/')) or root)}"
        f"</title><style>{CSS}</style></head><body><main>"
        f"<h1>newsbeam report</h1><p class=\"sub\">{html.escape(root)}: {span}; "
        f"committed runs only.</p><div class=\"cards\">{cards}</div>"
        + "".join(sections)
        + f"<footer>Generated {generated_at.strftime('%Y-%m-%d %H:%M UTC')} by newsbeam "
        "report from the DuckDB views of <code>newsbeam sql</code>.</footer></main>"
        f'<script type="application/json" id="{DATA_ID}">{payload}</script>'
        "</body></html>\n")


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_data(page: str) -> dict[str, Any]:
    """The figures embedded in a report page."""
    match = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>',
                      page, re.S)
    if match is None:
        raise ValueError("no report data in this page")
    return json.loads(match.group(1))


def build(root: str, clock: Any = None) -> tuple[str, dict[str, Any]]:
    """(page, figures) for the committed output at ``root``."""
    from pipelines.sql import connect

    con = connect(root, load=COLUMNS)  # seven queries: read the files once
    try:
        data = figures(con)
    finally:
        con.close()
    now = (clock or (lambda: dt.datetime.now(dt.UTC)))()
    return render_html(data, root, now), data


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="newsbeam report",
        description="Write a self-contained HTML report (plots inline, no network) about "
                    "the committed runs of a newsbeam output.")
    parser.add_argument("output", metavar="DIR", help="The output folder of newsbeam ingest.")
    parser.add_argument("--out", default="report.html",
                        help="Where to write the page. Default: ./report.html.")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """``newsbeam report``: exit 0, 2 when DIR is not an output or --out cannot be written."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    try:
        page, data = build(args.output)
        tmp = f"{args.out}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, args.out)
    except (ValueError, OSError) as e:
        print(f"newsbeam report: {e}", file=sys.stderr)
        return 2
    t = data["totals"]
    print(f"wrote {args.out} ({len(page.encode()):,} bytes): {t['articles']} articles, "
          f"{t['stories']} stories, {t['duplicates']} duplicates, {t['errors']} errors; "
          f"{time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
