"""Sinks: Hive-partitioned Parquet tables that never lose or double rows.

Beam's ``fileio.WriteToFiles`` has two silent data-loss traps with per-partition
subfolders (the final rename into a missing folder fails quietly, and the default names
collide across destinations), so the tables are written by :class:`WriteParquetTable`,
which follows the commit protocol of Beam's own file sinks:

1. each bundle writes its rows to uniquely named staging files under
   ``DIR/_staging/<run_id>/`` and emits a small descriptor per file;
2. only descriptors of committed bundles reach the finalize step (a retried bundle's
   files are orphans that are never published);
3. one finalize step per window either
   * (``publish=False``, batch runs) writes the list of those files to
     ``DIR/_staging/<run_id>/<table>-<window>.staged.json``; the launching process then
     publishes all tables of the run as one unit once the pipeline has finished
     (:func:`transforms.sinks.publish.publish_run`: intent log, renames, commit manifest); or
   * (``publish=True``, the unbounded pipeline, which never finishes) creates the
     partition folders, renames each staged file to its final name and writes the
     window's commit manifest ``DIR/_runs/<run_id>-<window>-<table>.json``.

   Final names are deterministic and never collide:
   ``DIR/<table>/date=YYYY-MM-DD[/topic=SLUG]/part-<run_id>-<window>-<NNNNN>.parquet``.

Readers of ``DIR/<table>/`` never see a partly written file: staging lives outside the
table folders and the rename is the publish step; readers that need whole runs read the
files commit manifests name (:func:`transforms.sinks.publish.committed_files`). (Spark and
pyarrow skip ``_``-prefixed names, but a DuckDB glob over ``DIR/**`` does not: read
``DIR/articles/**``.) All paths go through ``apache_beam.io.filesystems``, so ``gs://``
and ``s3://`` work as outputs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.sinks.publish import RUNS_DIR, STAGED_SUFFIX, write_json
from transforms.topics.taxonomy import TOPIC_SLUGS
from transforms.util import NAMESPACE

COMPRESSION = "zstd"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


LAYOUT_NOTE = "README.txt"
"""A text file at the root of every output: it says how to read the tables, and it makes
a reader given the root itself fail (pandas and pyarrow, naming it: "Is this a 'parquet'
file?") instead of silently mixing the rows of three tables with different columns.
DuckDB, polars and Spark refuse the root on their own (the tables' layouts differ)."""

LAYOUT_TEXT = """\
This folder is a newsbeam output: three Parquet tables, each in a folder of its own.

  articles/    date=YYYY-MM-DD/topic=SLUG/part-*.parquet   one row per article written
  duplicates/  date=YYYY-MM-DD/part-*.parquet              entries not written, and why
  errors/      date=YYYY-MM-DD/part-*.parquet              one row per failure
  _runs/       commit manifests: the files each run published

Read a table folder, never this folder: the tables have different columns, and a reader
given this folder would mix their rows. (This file is here so that such a read fails.)

  pandas    pd.read_parquet("DIR/articles")
  pyarrow   pyarrow.dataset.dataset("DIR/articles", partitioning="hive")
  polars    pl.read_parquet("DIR/articles/**/*.parquet", hive_partitioning=True)
  DuckDB    SELECT * FROM read_parquet('DIR/articles/**/*.parquet', hive_partitioning=true)
  Spark     spark.read.parquet("DIR/articles")
  newsbeam  newsbeam sql DIR     (DuckDB views: articles, duplicates, errors, stories)
            newsbeam report DIR  (an HTML page with plots)

A reader that needs each run whole reads the files the manifests in _runs/ name; the
project's README shows how ("Reading whole runs").
"""


def write_layout_note(root: str) -> None:
    """Writes :data:`LAYOUT_NOTE` at ``root`` unless it is there (atomic where local)."""
    path = FileSystems.join(root, LAYOUT_NOTE)
    if FileSystems.exists(path):
        return
    data = LAYOUT_TEXT.encode("utf-8")
    if "://" in root:
        with FileSystems.create(path) as f:
            f.write(data)
        return
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class StagedFile(NamedTuple):
    """A staging file written by one bundle, waiting to be published."""

    partition: str  # e.g. "date=2024-11-23/topic=sport"
    path: str
    rows: int


class PublishedFile(NamedTuple):
    """A file visible to readers."""

    table: str
    partition: str
    path: str
    rows: int


def article_partition(record: Any) -> str:
    """``date=…/topic=…`` for an article; refuses values outside the fixed alphabets."""
    return f"{date_partition(record)}/topic={_checked_topic(record.topic)}"


def date_partition(record: Any) -> str:
    """``date=YYYY-MM-DD`` for any record with a ``date`` field (a real ISO date, ASCII)."""
    value = record.date or ""
    if not _DATE.fullmatch(value):
        raise ValueError(f"refusing partition date {value!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"refusing partition date {value!r}") from e
    return f"date={value}"


def _checked_topic(topic: str) -> str:
    if topic not in TOPIC_SLUGS:
        raise ValueError(f"refusing partition topic {topic!r}")
    return topic


def to_rows(records: list[Any], schema: pa.Schema) -> pa.Table:
    """Record dataclasses → an Arrow table with exactly ``schema``'s columns."""
    names = schema.names
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for r in records:
        for n in names:
            v = getattr(r, n)
            columns[n].append(list(v) if isinstance(v, tuple) else v)
    return pa.Table.from_pydict(columns, schema=schema)


def window_token(window: Any) -> str:
    """A file-name-safe token for a window: ``g`` for the global window, else its bounds."""
    if isinstance(window, GlobalWindow):
        return "g"
    start = getattr(window, "start", None)
    end = getattr(window, "end", None)
    if start is None:
        return "w" + uuid.uuid5(uuid.NAMESPACE_OID, repr(window)).hex[:12]
    return f"{start.micros // 1_000_000}-{end.micros // 1_000_000}"


class _StageRowsFn(beam.DoFn):
    """Buffers records per (window, partition) and writes staging files."""

    def __init__(self, root: str, run_id: str, schema: pa.Schema,
                 partition_fn: Callable[[Any], str], rows_per_file: int):
        self._root = root
        self._run_id = run_id
        self._schema = schema
        self._partition_fn = partition_fn
        self._rows_per_file = rows_per_file
        self._buffers: dict[tuple[Any, str], list[Any]] = {}

    def start_bundle(self) -> None:
        self._buffers = {}

    def process(self, record: Any, window=beam.DoFn.WindowParam) -> Iterator[Any]:
        key = (window, self._partition_fn(record))
        buf = self._buffers.setdefault(key, [])
        buf.append(record)
        if len(buf) >= self._rows_per_file:
            yield self._write(key[1], self._buffers.pop(key))

    def finish_bundle(self) -> Iterator[Any]:
        for (window, partition), records in self._buffers.items():
            yield WindowedValue(self._write(partition, records), window.max_timestamp(),
                                [window])
        self._buffers = {}

    def _write(self, partition: str, records: list[Any]) -> StagedFile:
        staging = FileSystems.join(self._root, "_staging", self._run_id)
        path = FileSystems.join(staging, f"{uuid.uuid4().hex}.parquet")
        table = to_rows(records, self._schema)
        with FileSystems.create(path) as f:
            pq.write_table(table, f, compression=COMPRESSION)
        return StagedFile(partition, path, len(records))


class _ListStagedFn(beam.DoFn):
    """Writes the list of one window's committed staging files for the launcher to publish."""

    def __init__(self, root: str, table: str, run_id: str):
        self._root = root
        self._table = table
        self._run_id = run_id

    def process(self, element: tuple[str, list[StagedFile]],
                window=beam.DoFn.WindowParam) -> Iterator[StagedFile]:
        token = window_token(window)
        staged = sorted(element[1], key=lambda s: (s.partition, s.path))
        path = FileSystems.join(self._root, "_staging", self._run_id,
                                f"{self._table}-{token}{STAGED_SUFFIX}")
        # A retried step writes the same list again (the bundles behind it are committed).
        write_json(path, {"table": self._table, "window": token, "files": [
            {"partition": s.partition, "path": s.path, "rows": s.rows} for s in staged]})
        yield from staged


class _PublishFn(beam.DoFn):
    """Renames the committed staging files of one window into their partitions and
    commits them with the window's manifest."""

    def __init__(self, root: str, table: str, run_id: str):
        self._root = root
        self._table = table
        self._run_id = run_id
        self._rows = Metrics.counter(NAMESPACE, f"rows_written_{table}")
        self._files = Metrics.counter(NAMESPACE, f"files_written_{table}")

    def process(self, element: tuple[str, list[StagedFile]],
                window=beam.DoFn.WindowParam) -> Iterator[PublishedFile]:
        token = window_token(window)
        write_layout_note(self._root)
        made: set[str] = set()
        published = []
        for seq, staged in enumerate(sorted(element[1], key=lambda s: (s.partition, s.path))):
            folder = FileSystems.join(self._root, self._table, *staged.partition.split("/"))
            if folder not in made:
                # The rename below fails (and Beam's own sinks would hide it) when the
                # partition folder does not exist yet: create it first.
                if not FileSystems.exists(folder):
                    try:
                        FileSystems.mkdirs(folder)
                    except OSError:
                        if not FileSystems.exists(folder):  # lost a race: fine if it exists
                            raise
                made.add(folder)
            name = f"part-{self._run_id}-{token}-{seq:05d}.parquet"
            final = FileSystems.join(folder, name)
            published.append(PublishedFile(self._table, staged.partition, final, staged.rows))
            if FileSystems.exists(final):
                # A retried publish step: the rename already happened.
                if not FileSystems.exists(staged.path):
                    continue
                FileSystems.delete([final])
            FileSystems.rename([staged.path], [final])
            self._rows.inc(staged.rows)
            self._files.inc()
        run = f"{self._run_id}-{token}-{self._table}"
        tables: dict[str, list] = {t: [] for t in ("articles", "duplicates", "errors")}
        tables[self._table] = [["/".join([self._table, p.partition, p.path.rsplit("/", 1)[-1]]),
                                p.rows] for p in published]
        write_json(FileSystems.join(self._root, RUNS_DIR, f"{run}.json"),
                   {"run_id": run, "kind": "window", "tables": tables, "skipped": {},
                    "committed_at": dt.datetime.now(dt.UTC).isoformat()})
        yield from published


class WriteParquetTable(beam.PTransform):
    """Writes records to ``root/table/<partition>/part-*.parquet``.

    ``publish=True`` publishes and commits each window inside the pipeline and returns
    PublishedFiles; ``publish=False`` stops at the staged lists and returns StagedFiles
    (the launcher publishes the run: :func:`transforms.sinks.publish.publish_run`).
    """

    def __init__(self, root: str, table: str, schema: pa.Schema,
                 partition_fn: Callable[[Any], str], run_id: str,
                 rows_per_file: int = 200_000, publish: bool = True):
        super().__init__()
        self._root = root
        self._table = table
        self._schema = schema
        self._partition_fn = partition_fn
        self._run_id = run_id
        self._rows_per_file = rows_per_file
        self._publish = publish

    def expand(self, records):
        return (
            records
            | "StageRows" >> beam.ParDo(_StageRowsFn(
                self._root, self._run_id, self._schema, self._partition_fn,
                self._rows_per_file))
            | "OneKeyPerWindow" >> beam.Map(lambda s, t=self._table: (t, s))
            .with_output_types(tuple[str, Any])
            | "CollectStaged" >> beam.GroupByKey()
            | ("Publish" if self._publish else "ListStaged") >> beam.ParDo(
                (_PublishFn if self._publish else _ListStagedFn)(
                    self._root, self._table, self._run_id))
        )
