"""Publishing a run as a unit: staged files, an intent log, and a commit manifest.

Size: about 510 lines: the commit protocol (plan, intent, roll forward, manifest) and its
recovery must be read as one to see that a crash at any step is recoverable.

A batch run (``newsbeam ingest``, one ``watch`` cycle) publishes all its tables at once,
after its pipeline has finished, from the launching process and under the output's
writer lease (:mod:`transforms.sinks.lease`):

1. the pipeline leaves its rows in staging files under ``DIR/_staging/<run_id>/`` and,
   per table and window, a list of the files of committed bundles
   (``<table>-<window>.staged.json``, see :mod:`transforms.sinks.parquet`);
2. rows that an earlier run already published are taken out (``skip_published``: stable
   identities per table, see :func:`identity`), so a re-run over the same inputs adds
   nothing to any table;
3. the plan (staging path → final path of every file) is written to
   ``DIR/_runs/<run_id>.intent.json``;
4. every staged file is renamed to its final name in its partition folder;
5. ``DIR/_runs/<run_id>.json``, the **commit manifest** listing every file and its rows,
   is written atomically: this is the commit point;
6. the intent and the staging folder are removed.

At the next start, :func:`recover` rolls a publish that died after step 3 forward from its
intent (the renames are idempotent), deletes the staging files of runs that died before
it, and moves files that no manifest names (a publish of another release that died
half-way) to ``DIR/_uncommitted/``. An output written before manifests existed is adopted
whole by one ``legacy-…`` manifest the first time.

Readers that need a run's rows all or none read the files that manifests name
(:func:`committed_files`); see the README's Output section for DuckDB, pyarrow and Spark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)

TABLES = ("articles", "duplicates", "errors")
RUNS_DIR = "_runs"
STAGING_DIR = "_staging"
UNCOMMITTED_DIR = "_uncommitted"
STAGED_SUFFIX = ".staged.json"
INTENT_SUFFIX = ".intent.json"
COMPRESSION = "zstd"

IDENTITY_COLUMNS = {
    "articles": ("article_id",),
    "duplicates": ("feed_url", "url", "article_id", "level", "duplicate_of"),
    "errors": ("feed_url", "url", "level", "stage", "reason"),
}
"""Columns that identify a row across runs (times, messages and partitions excluded)."""


class PublishError(RuntimeError):
    """A publish cannot complete (a staged file named by the intent is missing)."""


# -- small file helpers (local paths and object stores alike) ----------------------------


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _list(pattern: str) -> list[str]:
    try:
        return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    except Exception:  # noqa: BLE001 - Beam raises its own error types for "no such folder"
        return []


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_json(path: str) -> Any:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` to ``path`` so that a reader sees the old content or all of the new.

    Local paths: a temporary name, fsync, rename, fsync of the folder. Object stores
    make an object visible whole when its upload completes.
    """
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if "://" in path:
        with FileSystems.create(path) as f:
            f.write(data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete(paths: Iterable[str]) -> None:
    paths = list(paths)
    if paths:
        try:
            FileSystems.delete(paths)
        except Exception:  # noqa: BLE001 - best effort: leftovers are removed next start
            for p in paths:
                try:
                    FileSystems.delete([p])
                except Exception:  # noqa: BLE001,S112
                    continue


def _remove_tree(folder: str) -> None:
    _delete(_list(_join(folder, "**")))
    if "://" not in folder and os.path.isdir(folder):
        for current, dirs, _files in os.walk(folder, topdown=False):
            for d in dirs:
                try:
                    os.rmdir(os.path.join(current, d))
                except OSError:
                    continue
        with contextlib.suppress(OSError):
            os.rmdir(folder)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(folder.rstrip("/")))  # the staging root, once empty


def _mkdirs(folder: str) -> None:
    if "://" in folder:
        return  # object stores have no folders
    os.makedirs(folder, exist_ok=True)


# -- manifests -------------------------------------------------------------------------


def manifest_path(root: str, run_id: str) -> str:
    return _join(root, RUNS_DIR, f"{run_id}.json")


def intent_path(root: str, run_id: str) -> str:
    return _join(root, RUNS_DIR, f"{run_id}{INTENT_SUFFIX}")


def manifest_paths(root: str) -> list[str]:
    """Commit manifests of ``root`` (intents and temporary files excluded)."""
    return [p for p in _list(_join(root, RUNS_DIR, "*.json"))
            if not p.endswith(INTENT_SUFFIX)]


def read_manifest(root: str, run_id: str) -> dict | None:
    path = manifest_path(root, run_id)
    return read_json(path) if _exists(path) else None


@dataclass
class RunManifest:
    """What one run published: files per table and rows skipped as already published."""

    run_id: str
    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict) -> RunManifest:
        return cls(obj["run_id"], {t: [(p, n) for p, n in fs] for t, fs in
                                   obj.get("tables", {}).items()},
                   {t: dict(v) for t, v in obj.get("skipped", {}).items()})

    def paths(self, root: str, table: str) -> list[str]:
        return [_join(root, rel) for rel, _ in self.files.get(table, [])]

    def rows(self, table: str) -> int:
        return sum(n for _, n in self.files.get(table, []))

    @property
    def skipped_entries(self) -> int:
        """Entries whose fate an earlier run already published (articles, duplicates,
        entry-level errors)."""
        return sum(v.get("entries", 0) for v in self.skipped.values())


# -- staged lists ------------------------------------------------------------------------


def staging_folder(root: str, run_id: str) -> str:
    return _join(root, STAGING_DIR, run_id)


def staged_lists(root: str, run_id: str) -> list[dict]:
    """The staged-file lists a finished pipeline left for ``run_id``."""
    return [read_json(p) for p in _list(_join(staging_folder(root, run_id),
                                              f"*{STAGED_SUFFIX}"))]


# -- identities of published rows ---------------------------------------------------------


def identity(table: str, row: dict) -> tuple:
    """The identity of a row of ``table`` (see :data:`IDENTITY_COLUMNS`)."""
    return tuple(row[c] for c in IDENTITY_COLUMNS[table])


def _read_columns(path: str, columns: Iterable[str]) -> pa.Table:
    with FileSystems.open(path) as f:
        return pq.read_table(f, columns=list(columns))


@dataclass
class Published:
    """Identities of every committed row, per table, plus (article_id, feed_url) pairs."""

    keys: dict[str, set] = field(default_factory=lambda: {t: set() for t in TABLES})
    article_feeds: set = field(default_factory=set)

    @classmethod
    def read(cls, root: str) -> Published:
        out = cls()
        for table in TABLES:
            cols = IDENTITY_COLUMNS[table]
            extra = ("feed_url",) if table == "articles" else ()
            for path in committed_files(root, table):
                t = _read_columns(path, cols + extra)
                values = [t.column(c).to_pylist() for c in cols]
                out.keys[table].update(zip(*values, strict=True))
                if extra:
                    out.article_feeds.update(zip(t.column("article_id").to_pylist(),
                                                 t.column("feed_url").to_pylist(),
                                                 strict=True))
        return out

    def mask(self, table: str, t: pa.Table) -> list[bool]:
        """True for the rows of ``t`` that were published before."""
        cols = [t.column(c).to_pylist() for c in IDENTITY_COLUMNS[table]]
        seen = self.keys[table]
        out = [key in seen for key in zip(*cols, strict=True)]
        if table == "duplicates":
            # An article read again is reported by the story stage as a duplicate
            # of itself: its fate (the article, from the same feed) is already published.
            for i, (feed, _url, aid, _level, kept) in enumerate(zip(*cols, strict=True)):
                if aid == kept and (aid, feed) in self.article_feeds:
                    out[i] = True
        return out


def _entry_rows(table: str, t: pa.Table, mask: list[bool]) -> int:
    if table != "errors":
        return sum(mask)
    levels = t.column("level").to_pylist()
    return sum(1 for m, level in zip(mask, levels, strict=True) if m and level == "entry")


def drop_published(table: str, staged: dict, published: Published) -> tuple[dict | None,
                                                                            int, int]:
    """Rewrites one staged file without rows already published.

    Returns (the staged entry to publish or None when nothing is left, rows skipped,
    entry rows skipped).
    """
    t = _read_columns(staged["path"], _schema_names(staged["path"]))
    mask = published.mask(table, t)
    skipped = sum(mask)
    if not skipped:
        return staged, 0, 0
    entries = _entry_rows(table, t, mask)
    kept = t.filter(pc.invert(pa.array(mask, type=pa.bool_())))
    if kept.num_rows == 0:
        _delete([staged["path"]])
        return None, skipped, entries
    path = staged["path"].rsplit(".parquet", 1)[0] + "-k.parquet"
    with FileSystems.create(path) as f:
        pq.write_table(kept, f, compression=COMPRESSION)
    _delete([staged["path"]])
    return dict(staged, path=path, rows=kept.num_rows), skipped, entries


def _schema_names(path: str) -> list[str]:
    with FileSystems.open(path) as f:
        return pq.read_schema(f).names


# -- publish and recover -----------------------------------------------------------------


def plan(root: str, run_id: str, lists: list[dict]) -> list[dict]:
    """Final names for staged files: ``<table>/<partition>/part-<run>-<window>-NNNNN``."""
    files = []
    for lst in sorted(lists, key=lambda x: (x["table"], x["window"])):
        staged = sorted(lst["files"], key=lambda s: (s["partition"], s["path"]))
        for seq, s in enumerate(staged):
            final = "/".join([lst["table"], s["partition"],
                              f"part-{run_id}-{lst['window']}-{seq:05d}.parquet"])
            files.append({"table": lst["table"], "partition": s["partition"],
                          "staged": s["path"], "final": final, "rows": s["rows"]})
    return files


def _roll_forward(root: str, intent: dict, pause: Any = None) -> RunManifest:
    from transforms.sinks.parquet import write_layout_note  # that module imports this one

    write_layout_note(root)
    made: set[str] = set()
    for f in intent["files"]:
        if pause:
            pause("rename")
        final = _join(root, f["final"])
        folder = final.rsplit("/", 1)[0]
        if folder not in made:
            _mkdirs(folder)
            made.add(folder)
        if _exists(f["staged"]):
            FileSystems.rename([f["staged"]], [final])
        elif not _exists(final):
            raise PublishError(f"run {intent['run_id']}: staged file {f['staged']} and its "
                               f"target {final} are both missing")
    tables: dict[str, list] = {t: [] for t in TABLES}
    for f in intent["files"]:
        tables[f["table"]].append([f["final"], f["rows"]])
    manifest = {"run_id": intent["run_id"], "kind": intent.get("kind", "run"),
                "committed_at": dt.datetime.now(dt.UTC).isoformat(),
                "tables": tables, "skipped": intent.get("skipped", {})}
    if pause:
        pause("before_commit")
    write_json(manifest_path(root, intent["run_id"]), manifest)  # the commit point
    if pause:
        pause("after_commit")
    _delete([intent_path(root, intent["run_id"])])
    _remove_tree(staging_folder(root, intent["run_id"]))
    return RunManifest.from_json(manifest)


def publish_run(root: str, run_id: str, skip_published: bool = True,
                pause: Any = None) -> RunManifest:
    """Publishes the staged output of a finished run as one unit; idempotent.

    ``pause`` (tests, fault injection) is called with a step name between steps.
    """
    done = read_manifest(root, run_id)
    if done is not None:
        return RunManifest.from_json(done)
    if _exists(intent_path(root, run_id)):
        return _roll_forward(root, read_json(intent_path(root, run_id)))
    lists = staged_lists(root, run_id)
    skipped: dict[str, dict[str, int]] = {}
    if skip_published and lists:
        published = Published.read(root)
        for lst in lists:
            kept_files = []
            for s in lst["files"]:
                s2, rows, entries = drop_published(lst["table"], s, published)
                if rows:
                    acc = skipped.setdefault(lst["table"], {"rows": 0, "entries": 0})
                    acc["rows"] += rows
                    acc["entries"] += entries
                if s2 is not None:
                    kept_files.append(s2)
            lst["files"] = kept_files
    intent = {"run_id": run_id, "kind": "run", "files": plan(root, run_id, lists),
              "skipped": skipped}
    if pause:
        pause("before_intent")
    write_json(intent_path(root, run_id), intent)
    if pause:
        pause("after_intent")
    return _roll_forward(root, intent, pause)


@dataclass
class Recovery:
    """What :func:`recover` found and did."""

    rolled_forward: list[str] = field(default_factory=list)
    staging_removed: list[str] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)
    adopted: int = 0

    def __bool__(self) -> bool:
        return bool(self.rolled_forward or self.staging_removed or self.uncommitted
                    or self.adopted)

    def render(self) -> str:
        parts = []
        if self.rolled_forward:
            parts.append(f"finished the publish of {len(self.rolled_forward)} interrupted "
                         f"run(s) ({', '.join(self.rolled_forward)})")
        if self.staging_removed:
            parts.append(f"removed the staging files of {len(self.staging_removed)} run(s) "
                         "that died before publishing")
        if self.uncommitted:
            parts.append(f"moved {len(self.uncommitted)} file(s) no manifest names to "
                         f"{UNCOMMITTED_DIR}/")
        if self.adopted:
            parts.append(f"adopted {self.adopted} file(s) written before run manifests")
        return "; ".join(parts)


def _table_files(root: str, table: str) -> list[str]:
    base = _join(root, table)
    out = []
    for p in _list(_join(base, "**")):
        name = p.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and not name.startswith(("_", ".")):
            out.append(p)
    return out


def _rel(root: str, path: str) -> str:
    return path[len(root):].lstrip("/")


def recover(root: str, keep: Iterable[str] = ()) -> Recovery:
    """Brings ``root`` back to a committed state; call it holding the writer lease.

    ``keep``: run ids whose staging must stay (the caller's own, when it recovers after
    its pipeline ran).
    """
    report = Recovery()
    keep = set(keep)
    runs = _join(root, RUNS_DIR)
    intents = [p for p in _list(_join(runs, f"*{INTENT_SUFFIX}"))]
    for p in intents:
        intent = read_json(p)
        if _exists(manifest_path(root, intent["run_id"])):
            _delete([p])  # committed; only the clean-up was cut short
            _remove_tree(staging_folder(root, intent["run_id"]))
            continue
        _roll_forward(root, intent)
        report.rolled_forward.append(intent["run_id"])
    for p in _list(_join(root, RUNS_DIR, "*.tmp")):
        _delete([p])
    for folder in sorted({_rel(_join(root, STAGING_DIR), p).split("/", 1)[0]
                          for p in _list(_join(root, STAGING_DIR, "**"))}):
        if folder and folder not in keep:
            _remove_tree(staging_folder(root, folder))
            report.staging_removed.append(folder)
    manifests = manifest_paths(root)
    named: set[str] = set()
    for p in manifests:
        for files in read_json(p).get("tables", {}).values():
            named.update(rel for rel, _ in files)
    strays = {t: [p for p in _table_files(root, t) if _rel(root, p) not in named]
              for t in TABLES}
    if not manifests:
        adopted = {t: [[_rel(root, p), _rows(p)] for p in strays[t]] for t in TABLES}
        report.adopted = sum(len(v) for v in adopted.values())
        if report.adopted:
            run_id = "legacy-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            write_json(manifest_path(root, run_id),
                       {"run_id": run_id, "kind": "legacy", "tables": adopted, "skipped": {},
                        "committed_at": dt.datetime.now(dt.UTC).isoformat()})
        return report
    for t in TABLES:
        for p in strays[t]:
            target = _join(root, UNCOMMITTED_DIR, _rel(root, p))
            _mkdirs(target.rsplit("/", 1)[0])
            FileSystems.rename([p], [target])
            report.uncommitted.append(_rel(root, p))
    if report:
        _LOG.warning("%s: %s", root, report.render())
    return report


def _rows(path: str) -> int:
    with FileSystems.open(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


# -- readers -----------------------------------------------------------------------------


def committed_files(root: str, table: str, attempts: int = 10) -> list[str]:
    """Files of ``table`` that commit manifests name and that exist, sorted.

    Manifests are read before the folder is listed, and listed again after: a run (or a
    compaction) that commits in between changes the set, and the read starts over. So the
    result holds every file of each run it includes and none of any other run's.
    """
    root = root.rstrip("/")
    for _ in range(attempts):
        before = manifest_paths(root)
        named: set[str] = set()
        for p in before:
            try:
                for rel, _ in read_json(p).get("tables", {}).get(table, []):
                    named.add(rel)
            except FileNotFoundError:
                continue
        present = [p for p in _table_files(root, table) if _rel(root, p) in named]
        if manifest_paths(root) == before:
            return present
    raise PublishError(f"{root}: the set of committed runs kept changing while reading")
