"""``newsbeam compact``: rewrite a table's many small Parquet files into a few large ones.

Size: about 550 lines: planning, the atomic folder exchange and its recovery are one
protocol, kept in one file.

Continuous ingestion publishes one file per cycle, window and partition, so a day of
polling leaves hundreds of small files per ``date=…/topic=…`` folder; readers pay for
each one. Compaction rewrites every partition of ``DIR/articles``, ``DIR/duplicates`` and
``DIR/errors`` into files of about ``--target-size`` bytes (default 128 MiB)::

    newsbeam compact ./out                       # every partition
    newsbeam compact ./out --date 2024-11-23     # one day
    newsbeam compact ./out --target-size 64MB

How one partition is swapped, and what a concurrent reader sees:

1. The partition's files are listed (the *inputs*) and their rows are streamed into new
   files under ``DIR/_compact/<token>/`` — outside the table folders, because DuckDB's
   ``**`` globs do not skip ``_``-prefixed folders inside them.
2. The new files are read back; row count and an order-independent digest of every row
   must equal the inputs', or the partition is left alone and reported.
3. The staged folder and the live partition folder are exchanged in one atomic system call
   (``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)`` on macOS). A reader
   that lists the partition therefore sees either every old file or every new file: never
   both, never neither. A reader that *listed* the old files and *opens* one of them after
   the exchange gets ``FileNotFoundError`` (its listing is stale) and must retry; it never
   gets a wrong count. Where no exchange call exists, two renames are used and the
   partition is absent for the moment between them (a warning says so).
4. A file a writer published into the partition after step 1 lands in either folder; if it
   landed in the old one it is moved into the live one, so nothing is lost. Run compaction
   on partitions that are no longer written to (past dates) to avoid even that moment.
5. The old generation is deleted. A small manifest beside the staged folder lets the next
   run finish or undo a compaction that was interrupted at any point.

Compaction is a writer like a run: it holds the output folder's writer lease
(:mod:`transforms.sinks.lease`; another writer waits or refuses), finishes any interrupted
publish first (:func:`transforms.sinks.publish.recover`), merges only files that a commit
manifest names, and commits its new files with a manifest of its own
(``DIR/_runs/compact-<token>.json``) just before the swap, so readers that follow the
manifests (:func:`transforms.sinks.publish.committed_files`) see the same rows before and after.

Only local file systems are supported: object stores have no atomic folder exchange.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.sinks.lease import EXIT_BUSY, LeaseBusy, OutputLease
from transforms.sinks.publish import committed_files
from transforms.sinks.publish import recover as recover_publish
from transforms.sinks.publish import write_json as write_manifest

_LOG = logging.getLogger(__name__)

TABLES = ("articles", "duplicates", "errors")
DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
COMPRESSION = "zstd"
WORK_DIR = "_compact"
_BUFFER_BYTES = 64 * 1024 * 1024  # rows gathered in memory before one row group is written
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MASK64 = (1 << 64) - 1


class CompactError(RuntimeError):
    """Compaction cannot start (bad folder, another compaction running)."""


# -- pure helpers ------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"134217728"``, ``"128MB"``, ``"128MiB"``, ``"1.5G"`` → bytes (powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 134217728, 128MB or 1G)")
    number, unit = float(m.group(1)), (m.group(2) or "").lower()
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit[:1]]
    size = int(number * 1024**power)
    if size < 1024:
        raise ValueError(f"target size must be at least 1 KiB, got {text!r}")
    return size


def plan_groups(files: Sequence[tuple[str, int]], target: int) -> list[list[str]]:
    """Packs (name, bytes) pairs, in order, into groups of at most ``target`` bytes.

    Order is kept (names sort by run and window, so related rows stay together); a file
    larger than ``target`` forms a group of its own. Zstandard output of merged files is
    about the size of its inputs, so input bytes predict output bytes well enough.
    """
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, nbytes in files:
        if current and size + nbytes > target:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        groups.append(current)
    return groups


@dataclass
class Digest:
    """Row count and an order-independent digest (sum of per-row BLAKE2b) of a table.

    A row's bytes are the ``repr`` of its Python values (str, int, float, bool, None,
    lists, tz-aware datetimes: all with exact, stable reprs); building rows column by
    column is about twice as fast as ``to_pylist`` dictionaries.
    """

    rows: int = 0
    total: int = 0

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        columns = [c.to_pylist() for c in table.columns]
        total = self.total
        for row in zip(*columns, strict=True):
            h = hashlib.blake2b(repr(row).encode("utf-8", "surrogatepass"), digest_size=8)
            total = (total + int.from_bytes(h.digest(), "big")) & _MASK64
        self.total = total
        self.rows += table.num_rows

    def __str__(self) -> str:
        return f"{self.rows} rows, digest {self.total:016x}"


# -- atomic exchange of two folders -------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def exchange(a: str, b: str) -> bool:
    """Atomically swaps two existing paths; False when the OS or file system cannot."""
    libc = _libc()
    if libc is None:
        return False
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                            _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot swap
        return False
    raise OSError(err, os.strerror(err), a)


def _swap_folders(staged: str, live: str) -> bool:
    """Puts ``staged`` at ``live`` and the old ``live`` at ``staged``; True if atomic."""
    if exchange(staged, live):
        return True
    _LOG.warning("no atomic folder exchange here: %s is absent for a moment", live)
    aside = staged + ".old"
    os.rename(live, aside)
    os.rename(staged, live)
    os.rename(aside, staged)
    return False


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- partitions ---------------------------------------------------------------------------


def _visible(name: str) -> bool:
    return not name.startswith(("_", "."))


def data_files(folder: str) -> list[tuple[str, int]]:
    """Visible ``*.parquet`` files directly in ``folder``, as sorted (name, bytes)."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file() and _visible(e.name) and e.name.endswith(".parquet"):
                out.append((e.name, e.stat().st_size))
    return sorted(out)


def partitions(root: str, table: str, dates: Iterable[str] | None = None) -> list[str]:
    """Partition folders of ``root/table`` holding Parquet files, relative to the table."""
    base = Path(root, table)
    if not base.is_dir():
        return []
    wanted = {f"date={d}" for d in dates} if dates else None
    found = []
    for current, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        rel = Path(current).relative_to(base)
        if wanted is not None and rel.parts and rel.parts[0] not in wanted:
            dirs[:] = []
            continue
        if rel.parts and any(_visible(f) and f.endswith(".parquet") for f in files):
            found.append(rel.as_posix())
    return found


@dataclass
class PartitionResult:
    """What happened to one partition."""

    table: str
    partition: str
    files_before: int
    files_after: int
    rows: int
    bytes_before: int
    bytes_after: int
    status: str  # compacted, skipped, failed
    message: str = ""
    atomic: bool = True


@dataclass
class CompactReport:
    """All partitions a run looked at."""

    results: list[PartitionResult] = field(default_factory=list)

    @property
    def failed(self) -> list[PartitionResult]:
        return [r for r in self.results if r.status == "failed"]

    def render(self) -> str:
        lines = []
        for r in self.results:
            if r.status == "compacted":
                lines.append(f"  {r.table}/{r.partition}: {r.files_before} files "
                             f"({r.bytes_before:,} B) -> {r.files_after} "
                             f"({r.bytes_after:,} B), {r.rows} rows verified")
            elif r.status == "failed":
                lines.append(f"  {r.table}/{r.partition}: FAILED, left as it was: {r.message}")
        done = [r for r in self.results if r.status == "compacted"]
        lines.append(
            f"compacted {len(done)} of {len(self.results)} partitions: "
            f"{sum(r.files_before for r in done)} files -> {sum(r.files_after for r in done)}, "
            f"{sum(r.rows for r in done)} rows; {len(self.failed)} failed")
        return "\n".join(lines)


# -- one partition ------------------------------------------------------------------------


def _stream_group(paths: list[str], out_path: str, schema: pa.Schema,
                  digest: Digest) -> int:
    """Copies the rows of ``paths`` into one file, digesting them on the way; rows written."""
    rows = 0
    buffered: list[pa.Table] = []
    buffered_bytes = 0
    with pq.ParquetWriter(out_path, schema, compression=COMPRESSION) as writer:
        for path in paths:
            table = pq.read_table(path, schema=schema)
            digest.update(table)
            rows += table.num_rows
            buffered.append(table)
            buffered_bytes += table.nbytes
            if buffered_bytes >= _BUFFER_BYTES:
                writer.write_table(pa.concat_tables(buffered))
                buffered, buffered_bytes = [], 0
        if buffered:
            # One row group per write: gathering the small inputs first is what makes the
            # output's row groups large, which is the point of compacting.
            writer.write_table(pa.concat_tables(buffered))
    with open(out_path, "rb") as f:
        os.fsync(f.fileno())
    return rows


def _schema_of(paths: list[str]) -> pa.Schema:
    """The schema of the merged file: the widest of the inputs' schemas.

    A file of an older schema version may lack the nullable columns a newer version
    appended (``source`` and ``language`` of duplicates and errors, version 2); its rows
    are merged with those columns null. Any other difference stops the merge.
    """
    schemas = [pq.read_schema(p) for p in paths]
    widest = max(range(len(paths)), key=lambda i: len(schemas[i]))
    schema = schemas[widest]
    for p, other in zip(paths, schemas, strict=True):
        head = pa.schema(list(schema)[:len(other)])
        appended = list(schema)[len(other):]
        if not (other.equals(head, check_metadata=False)
                and all(f.nullable for f in appended)):
            raise ValueError(f"{os.path.basename(p)} has a different schema than "
                             f"{os.path.basename(paths[widest])}; not merging them")
    return schema


def compact_partition(root: str, table: str, partition: str, target: int,
                      token: str, committed: set[str] | None = None) -> PartitionResult:
    """Compacts one partition folder; verifies before swapping; never loses a row.

    ``committed``: names (``table/partition/file``) that commit manifests name; only
    those are merged (others are carried over as they are). None merges every file.
    """
    live = os.path.join(root, table, *partition.split("/"))
    inputs = [(n, size) for n, size in data_files(live)
              if committed is None or f"{table}/{partition}/{n}" in committed]
    before = sum(s for _, s in inputs)
    groups = plan_groups(inputs, target)
    result = PartitionResult(table, partition, len(inputs), len(inputs), 0, before, before,
                             "skipped")
    if len(groups) >= len(inputs):
        result.message = "already compact"
        return result
    work = os.path.join(root, WORK_DIR, token)
    staged = os.path.join(work, table, *partition.split("/"))
    os.makedirs(staged)
    paths = {name: os.path.join(live, name) for name, _ in inputs}
    outputs = [f"part-compact-{token}-{i:05d}.parquet" for i in range(len(groups))]
    manifest = {"table": table, "partition": partition, "inputs": [n for n, _ in inputs],
                "outputs": outputs}
    _write_json(os.path.join(work, "manifest.json"), manifest)
    try:
        schema = _schema_of(list(paths.values()))
        source = Digest()
        out_rows = []
        for name, group in zip(outputs, groups, strict=True):
            out_rows.append(_stream_group([paths[n] for n in group],
                                          os.path.join(staged, name), schema, source))
        check = Digest()
        for name in outputs:
            check.update(pq.read_table(os.path.join(staged, name)))
        if (check.rows, check.total) != (source.rows, source.total):
            raise ValueError(f"verification failed: inputs {source}, outputs {check}")
    except (OSError, ValueError, pa.ArrowException) as e:
        shutil.rmtree(work, ignore_errors=True)
        result.status, result.message = "failed", str(e)
        return result
    _fsync_dir(staged)
    # Files published after the listing above are not part of the merge: carry them over
    # as they are (hard links: same inode, nothing copied), so the swap hides none of them.
    for name, _ in data_files(live):
        if name not in paths:
            os.link(os.path.join(live, name), os.path.join(staged, name))
    if committed is not None:
        # Committed before the swap: a reader following the manifests that lists the
        # folder after the swap finds the new files named; one that read the manifests
        # before this write sees the set change and reads again.
        tables: dict[str, list] = {t: [] for t in TABLES}
        tables[table] = [[f"{table}/{partition}/{name}", n]
                         for name, n in zip(outputs, out_rows, strict=True)]
        write_manifest(os.path.join(root, "_runs", f"compact-{token}.json"),
                       {"run_id": f"compact-{token}", "kind": "compact", "tables": tables,
                        "skipped": {}, "replaces": [f"{table}/{partition}/{n}"
                                                    for n, _ in inputs],
                        "committed_at": dt.datetime.now(dt.UTC).isoformat()})
    result.atomic = _swap_folders(staged, live)
    _fsync_dir(os.path.dirname(live))
    _finish(work, live, staged, manifest)
    result.status = "compacted"
    result.rows = source.rows
    result.files_after = len(data_files(live))
    result.bytes_after = sum(s for _, s in data_files(live))
    return result


def _finish(work: str, live: str, old: str, manifest: dict) -> None:
    """After the swap ``old`` holds the previous generation: rescue strays, then delete."""
    known = set(manifest["inputs"]) | set(manifest["outputs"])
    for folder in (old, old + ".old"):
        if not os.path.isdir(folder):
            continue
        for name, _ in data_files(folder):
            target = os.path.join(live, name)
            if name not in known and not os.path.exists(target):
                # Published into the old folder between our listing and the swap.
                os.rename(os.path.join(folder, name), target)
    shutil.rmtree(work, ignore_errors=True)


def recover(root: str) -> int:
    """Finishes or undoes compactions interrupted earlier; returns how many it handled."""
    base = os.path.join(root, WORK_DIR)
    if not os.path.isdir(base):
        return 0
    handled = 0
    for token in sorted(os.listdir(base)):
        work = os.path.join(base, token)
        if not os.path.isdir(work):
            continue
        try:
            with open(os.path.join(work, "manifest.json"), encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            shutil.rmtree(work, ignore_errors=True)  # died before anything was staged
            handled += 1
            continue
        parts = manifest["partition"].split("/")
        live = os.path.join(root, manifest["table"], *parts)
        staged = os.path.join(work, manifest["table"], *parts)
        if os.path.isdir(staged + ".old") and not os.path.isdir(live):
            os.rename(staged + ".old", live)  # died between the two fallback renames
        # Whether or not the swap happened, the live folder holds a complete generation;
        # the staged folder holds the other one plus, possibly, strays to rescue.
        _finish(work, live, staged, manifest)
        handled += 1
    return handled


def _write_json(path: str, obj: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock(root: str) -> Iterator[None]:
    """One compaction per output folder at a time (a lock file naming its process)."""
    os.makedirs(os.path.join(root, WORK_DIR), exist_ok=True)
    path = os.path.join(root, WORK_DIR, "lock")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(Path(path).read_text().strip() or "0")
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError):
                os.unlink(path)  # left by a compaction that died
                continue
            except PermissionError:
                pass
            raise CompactError(f"another compaction (pid {pid}) is running on {root}") from None
    else:
        raise CompactError(f"cannot take the lock {path}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _attach_summary(root: str, token: str, result: PartitionResult, seconds: float) -> None:
    """Adds the partition's summary to its commit manifest (``"summary"``, as a run's)."""
    path = os.path.join(root, "_runs", f"compact-{token}.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return  # nothing was committed (a partition no manifest names)
    manifest["summary"] = {
        "run_id": f"compact-{token}", "command": "compact", "exit_code": 0,
        "table": result.table, "partition": result.partition, "rows": result.rows,
        "files_before": result.files_before, "files_after": result.files_after,
        "bytes_before": result.bytes_before, "bytes_after": result.bytes_after,
        "atomic_swap": result.atomic, "timings": {"total_s": round(seconds, 3)}}
    write_manifest(path, manifest)


def compact(root: str, dates: Sequence[str] | None = None,
            target: int = DEFAULT_TARGET_BYTES,
            tables: Sequence[str] = TABLES, lock_wait: float = 0.0) -> CompactReport:
    """Compacts every partition of ``tables`` under ``root`` (only ``dates`` if given).

    Holds the writer lease of ``root`` throughout (:class:`LeaseBusy` if another writer
    holds it for longer than ``lock_wait`` seconds).
    """
    if "://" in root:
        raise CompactError(f"{root}: compaction needs a local folder (object stores have "
                           "no atomic folder exchange)")
    if not os.path.isdir(root):
        raise CompactError(f"{root}: no such folder")
    report = CompactReport()
    token0 = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    with OutputLease(root, f"compact-{token0}", wait=lock_wait, command="newsbeam compact"), \
            _lock(root):
        published = recover_publish(root)
        if published:
            _LOG.warning("%s", published.render())
        recovered = recover(root)
        if recovered:
            _LOG.warning("finished %d interrupted compaction(s) first", recovered)
        for table in tables:
            committed = {os.path.relpath(p, root).replace(os.sep, "/")
                         for p in committed_files(root, table)}
            for partition in partitions(root, table, dates):
                token = (dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-"
                         + uuid.uuid4().hex[:6])
                started = time.monotonic()
                result = compact_partition(root, table, partition, target, token, committed)
                report.results.append(result)
                if result.status == "compacted":
                    _attach_summary(root, token, result, time.monotonic() - started)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(root, WORK_DIR))  # only if nothing is left in it
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line of ``newsbeam compact`` (arguments: :mod:`pipelines.options`)."""
    from pipelines.options import add_compact_arguments

    parser = argparse.ArgumentParser(
        prog="newsbeam compact",
        description="Rewrite each date/topic partition into files of about the target size.")
    add_compact_arguments(parser)
    args = parser.parse_args(argv)
    bad = [d for d in args.date if not _DATE.match(d)]
    if bad:
        parser.error(f"--date must be YYYY-MM-DD, got {bad[0]!r}")
    try:
        args.target_bytes = parse_size(args.target_size)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: Sequence[str] | None = None, console=None) -> int:
    """Runs ``newsbeam compact``; exit code 1 if a partition failed verification."""
    args = parse_args(argv)
    try:
        report = compact(args.dir, args.date or None, args.target_bytes,
                         args.table or TABLES, args.lock_wait)
    except LeaseBusy as e:
        print(f"newsbeam compact: {e}", file=sys.stderr)
        return EXIT_BUSY
    except CompactError as e:
        print(f"newsbeam compact: {e}", file=sys.stderr)
        return 2
    print(report.render())
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
