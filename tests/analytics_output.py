"""A small committed output for the readers, ``newsbeam sql`` and ``newsbeam report``.

Two runs are published through the real publish step (staged files, intent, manifest):
``r1`` writes duplicates and errors in the version 1 schema (no ``source`` or
``language``), as an older release did; ``r2`` writes the current schema. One more
article file lies in a partition without any manifest naming it (a publish killed
half-way by an older release): readers of committed runs must not see it.

Stories (``story_id`` = the lead's ``article_id``):

- ``s-kursk``: lead ``a1`` (The Harbor Ledger, en, 22 Nov 08:00), echoes ``a2``
  (Rheinblick, de, 22 Nov 12:00) and ``a3`` (Dniprovyi Visnyk, uk, 23 Nov 09:30), and
  a near copy of ``a1`` dropped as a duplicate (Tallis Market Report, en): 3 articles,
  1 copy, 4 outlets, 3 languages;
- ``s-grain``: lead ``a4`` (The Harbor Ledger, en, 22 Nov 14:30) and a content copy of it
  from run r1 (no source or language in that file): 1 article, 1 copy, 1 outlet;
- ``s-rates``: lead ``a5`` (Vostochny Kurier, ru, 24 Nov, no published time: fetched
  24 Nov 06:00) and a ``url`` re-listing of it by Tallis (not a copy): 1 article;
- ``s-cup``: lead ``a6`` (Pitchside Daily, en, 24 Nov 18:00), title with markup and a
  ``</script>``, echo ``a7`` (Harbour Sport, en, 25 Nov 07:00): 2 articles, 2 outlets.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import (
    ARTICLE_SCHEMA,
    DUPLICATE_SCHEMA,
    ERROR_SCHEMA,
    SCHEMA_VERSION,
    Article,
    DuplicateRecord,
    ErrorRecord,
)
from transforms.sinks import publish as pub
from transforms.sinks.parquet import to_rows

UTC = dt.UTC
HOSTILE_TITLE = 'Cup final </script><script>alert("x")</script> & <b>drama</b>'


def t(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 11, day, hour, minute, tzinfo=UTC)


def article(aid: str, story: str, source: str, language: str, topic: str,
            published: dt.datetime | None, title: str, fetched: dt.datetime | None = None
            ) -> Article:
    fetched = fetched or (published or t(25, 0)) + dt.timedelta(minutes=5)
    day = (published or fetched).strftime("%Y-%m-%d")
    return Article(
        article_id=aid, url=f"https://{source.lower().replace(' ', '-')}.example/{aid}",
        feed_url=f"https://{source.lower().replace(' ', '-')}.example/feed", source=source,
        title=title, body=f"Body of {aid}.", body_source="page", authors=[],
        published_at=published, fetched_at=fetched, language=language,
        language_confidence=0.99, topic=topic, topic_code=None, topic_source="classifier",
        categories=[], content_hash=f"h-{aid}", story_id=story, is_story_lead=aid == story,
        story_similarity=None if aid == story else 0.8, date=day,
        schema_version=SCHEMA_VERSION)


ARTICLES = [
    article("s-kursk", "s-kursk", "The Harbor Ledger", "en", "conflict-war-peace", t(22, 8),
            "Soldiers in Kursk told to hold the line"),
    article("a2", "s-kursk", "Rheinblick", "de", "conflict-war-peace", t(22, 12),
            "Soldaten in Kursk sollen die Stellung halten"),
    article("a3", "s-kursk", "Dniprovyi Visnyk", "uk", "politics-government", t(23, 9, 30),
            "Бійці в Курській області мають тримати позиції"),
    article("s-grain", "s-grain", "The Harbor Ledger", "en", "economy-business-finance",
            t(22, 14, 30), "Black Sea grain shipments reach a wartime high"),
    article("s-rates", "s-rates", "Vostochny Kurier", "ru", "economy-business-finance", None,
            "Центробанк сохранил ставку", fetched=t(24, 6)),
    article("s-cup", "s-cup", "Pitchside Daily", "en", "sport", t(24, 18), HOSTILE_TITLE),
    article("a7", "s-cup", "Harbour Sport", "en", "sport", t(25, 7),
            "Sharks win the cup after a shoot-out"),
]
UNCOMMITTED = article("zz", "zz", "Ghost Gazette", "en", "sport", t(24, 10), "Not committed")


def duplicate(aid: str, of: str, level: str, source: str | None, language: str | None,
              at: dt.datetime) -> DuplicateRecord:
    return DuplicateRecord(
        url=f"https://dup.example/{aid}", feed_url="https://dup.example/feed", article_id=aid,
        duplicate_of=of, level=level, similarity=1.0 if level in ("url", "content") else 0.9,
        title=f"Copy {aid}", detected_at=at, date=at.strftime("%Y-%m-%d"),
        schema_version=SCHEMA_VERSION, source=source, language=language)


def error(url: str, level: str, stage: str, reason: str, source: str | None,
          language: str | None, at: dt.datetime) -> ErrorRecord:
    return ErrorRecord(url=url, feed_url="https://x.example/feed", level=level, stage=stage,
                       reason=reason, message=reason, http_status=None, attempts=1,
                       occurred_at=at, date=at.strftime("%Y-%m-%d"),
                       schema_version=SCHEMA_VERSION, source=source, language=language)


DUPLICATES_V1 = [duplicate("d-grain", "s-grain", "content", None, None, t(23, 1))]
DUPLICATES = [duplicate("d-kursk", "s-kursk", "near", "Tallis Market Report", "en", t(25, 1)),
              duplicate("s-rates", "s-rates", "url", "Tallis Market Report", "ru", t(25, 1))]
ERRORS_V1 = [error("https://x.example/slow", "entry", "fetch_page", "timeout", None, None,
                   t(23, 2))]
ERRORS = [error("https://x.example/gone", "entry", "fetch_page", "http_404",
                "The Harbor Ledger", "en", t(25, 2)),
          error("https://broken.example/feed", "feed", "parse_feed", "malformed_feed",
                "Broken Outlet", None, t(25, 2)),
          error("https://x.example/gone2", "entry", "fetch_page", "http_404", None, None,
                t(25, 3))]

V1_COLUMNS = ("source", "language")
"""Columns the version 1 schema of duplicates and errors lacked."""


def _stage(root: str, run_id: str, table: str, rows: list, schema: pa.Schema,
           partition) -> None:
    files = []
    for part in sorted({partition(r) for r in rows}):
        chunk = [r for r in rows if partition(r) == part]
        path = os.path.join(root, "_staging", run_id, f"{uuid.uuid4().hex}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(to_rows(chunk, schema), path)
        files.append({"partition": part, "path": path, "rows": len(chunk)})
    pub.write_json(os.path.join(root, "_staging", run_id, f"{table}-g{pub.STAGED_SUFFIX}"),
                   {"table": table, "window": "g", "files": files})


def _v1(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name not in V1_COLUMNS])


def build_output(root: str) -> str:
    """Writes the output described above at ``root``; returns ``root``."""
    by_date = (lambda r: f"date={r.date}")  # noqa: E731 - a one-line key
    by_topic = (lambda r: f"date={r.date}/topic={r.topic}")  # noqa: E731
    _stage(root, "r1", "articles", ARTICLES[:4], ARTICLE_SCHEMA, by_topic)
    _stage(root, "r1", "duplicates", DUPLICATES_V1, _v1(DUPLICATE_SCHEMA), by_date)
    _stage(root, "r1", "errors", ERRORS_V1, _v1(ERROR_SCHEMA), by_date)
    pub.publish_run(root, "r1")
    _stage(root, "r2", "articles", ARTICLES[4:], ARTICLE_SCHEMA, by_topic)
    _stage(root, "r2", "duplicates", DUPLICATES, DUPLICATE_SCHEMA, by_date)
    _stage(root, "r2", "errors", ERRORS, ERROR_SCHEMA, by_date)
    pub.publish_run(root, "r2")
    folder = os.path.join(root, "articles", f"date={UNCOMMITTED.date}", "topic=sport")
    os.makedirs(folder, exist_ok=True)
    pq.write_table(to_rows([UNCOMMITTED], ARTICLE_SCHEMA),
                   os.path.join(folder, "part-killed-g-00000.parquet"))
    return root
