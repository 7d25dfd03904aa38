"""The end-of-run summary, read back from the Parquet files a run published.

Reading the output back (rather than trusting in-flight counts) is what proves that
rows written equal rows readable. The summary also checks the accounting rule: every
entry read ends as exactly one written article, duplicate or entry-level error, or was
already published by an earlier run (a re-run over the same inputs writes nothing again;
the run's commit manifest counts what it skipped).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.sinks.publish import RunManifest, read_manifest


@dataclass
class Summary:
    """Counts for one run, from the files it published and from Beam's counters."""

    run_id: str
    articles: int = 0
    duplicates: int = 0
    entry_errors: int = 0
    feed_errors: int = 0
    already_published: int = 0
    by_partition: collections.Counter = field(default_factory=collections.Counter)
    by_language: collections.Counter = field(default_factory=collections.Counter)
    story_sizes: collections.Counter = field(default_factory=collections.Counter)
    duplicates_by_level: collections.Counter = field(default_factory=collections.Counter)
    errors_by_reason: collections.Counter = field(default_factory=collections.Counter)
    counters: dict = field(default_factory=dict)
    command: str = "ingest"
    timings: dict = field(default_factory=dict)

    @property
    def entries_read(self) -> int:
        return self.counters.get("entries_read", 0)

    @property
    def balanced(self) -> bool:
        """True when entries read = articles + duplicates + entry errors + entries whose
        fate an earlier run already published."""
        return self.entries_read == (self.articles + self.duplicates + self.entry_errors
                                     + self.already_published)

    @property
    def nothing_through(self) -> bool:
        """True when the run tried something and nothing came through: it wrote error
        records but no article or duplicate, and no entry had been published before or
        was unchanged (every feed, or every page, failed)."""
        through = (self.articles + self.duplicates + self.already_published
                   + self.counters.get("entries_unchanged", 0))
        return through == 0 and self.entry_errors + self.feed_errors > 0

    def to_json(self, exit_code: int) -> dict:
        """The machine-readable summary (kept in the run's commit manifest)."""
        return {
            "run_id": self.run_id,
            "command": self.command,
            "exit_code": exit_code,
            "balanced": self.balanced,
            "entries_read": self.entries_read,
            "articles": self.articles,
            "duplicates": self.duplicates,
            "entry_errors": self.entry_errors,
            "feed_errors": self.feed_errors,
            "already_published": self.already_published,
            "articles_by_partition": dict(sorted(self.by_partition.items())),
            "articles_by_language": dict(sorted(self.by_language.items())),
            "stories": len(self.story_sizes),
            "stories_told_by_several": sum(1 for n in self.story_sizes.values() if n > 1),
            "duplicates_by_level": dict(sorted(self.duplicates_by_level.items())),
            "errors_by_reason": dict(sorted(self.errors_by_reason.items())),
            "counters": dict(sorted(self.counters.items())),
            "timings": dict(self.timings),
        }

    def render(self) -> str:
        lines = [f"newsbeam run {self.run_id}"]
        lines.append(f"  entries read {self.entries_read}: {self.articles} articles written, "
                     f"{self.duplicates} duplicates, {self.entry_errors} entry errors"
                     + (f", {self.already_published} already published"
                        if self.already_published else "")
                     + f" [{'accounting OK' if self.balanced else 'ACCOUNTING MISMATCH'}]")
        lines.append(f"  feed errors: {self.feed_errors}")
        if "entries_unchanged" in self.counters:
            c = self.counters
            lines.append(f"  remembered: {c.get('feeds_not_modified', 0)} feeds not modified, "
                         f"{c['entries_unchanged']} entries seen in earlier runs "
                         "(not fetched again)")
        lines.append("  articles by date/topic:")
        for part, n in sorted(self.by_partition.items()):
            lines.append(f"    {part:<60} {n:>6}")
        lines.append("  articles by language: " + ", ".join(
            f"{k} {v}" for k, v in sorted(self.by_language.items())))
        echoed = [n for n in self.story_sizes.values() if n > 1]
        lines.append(f"  stories: {len(self.story_sizes)}; {len(echoed)} told by several "
                     f"articles ({sum(echoed)} articles)")
        if self.duplicates_by_level:
            lines.append("  duplicates by level: " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.duplicates_by_level.items())))
        if self.errors_by_reason:
            lines.append("  errors by stage/reason: " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.errors_by_reason.items())))
        if self.nothing_through:
            hint = (" (loopback or private addresses need --allow-private-network)"
                    if any(k.endswith("/blocked_address") for k in self.errors_by_reason)
                    else "")
            lines.append(f"  nothing came through: every feed or page failed{hint}")
        if self.timings:
            lines.append(f"  took {self.timings.get('total_s', 0.0):.1f} s (pipeline "
                         f"{self.timings.get('pipeline_s', 0.0):.1f} s)")
        return "\n".join(lines)


def run_files(root: str, table: str, run_id: str) -> list[str]:
    """Published files of ``table`` written by ``run_id``: those its commit manifest
    names, or (the unbounded pipeline, committed window by window) its file names."""
    manifest = read_manifest(root, run_id)
    if manifest is not None:
        return sorted(RunManifest.from_json(manifest).paths(root, table))
    pattern = FileSystems.join(root, table, "**", f"part-{run_id}-*.parquet")
    return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)


def _read(path: str, columns: list[str]):
    with FileSystems.open(path) as f:
        return pq.read_table(f, columns=columns)


def _partition_of(root: str, table: str, path: str) -> str:
    rel = path[len(FileSystems.join(root, table)):].strip("/")
    return rel.rsplit("/", 1)[0]


def summarize(root: str, run_id: str, counters: dict[str, int]) -> Summary:
    """Builds the run summary from the run's published files."""
    s = Summary(run_id=run_id, counters=dict(counters))
    manifest = read_manifest(root, run_id)
    if manifest is not None:
        s.already_published = RunManifest.from_json(manifest).skipped_entries
    for path in run_files(root, "articles", run_id):
        t = _read(path, ["language", "story_id"])
        s.articles += t.num_rows
        s.by_partition[_partition_of(root, "articles", path)] += t.num_rows
        s.by_language.update(t.column("language").to_pylist())
        s.story_sizes.update(t.column("story_id").to_pylist())
    for path in run_files(root, "duplicates", run_id):
        t = _read(path, ["level"])
        s.duplicates += t.num_rows
        s.duplicates_by_level.update(t.column("level").to_pylist())
    for path in run_files(root, "errors", run_id):
        t = _read(path, ["level", "stage", "reason"])
        for level, stage, reason in zip(*(t.column(c).to_pylist()
                                          for c in ("level", "stage", "reason")), strict=True):
            if level == "entry":
                s.entry_errors += 1
            else:
                s.feed_errors += 1
            s.errors_by_reason[f"{stage}/{reason}"] += 1
    return s


def cleanup_staging(root: str, run_id: str) -> None:
    """Removes what a finished run left in staging (files of retried bundles).

    Object stores have no folders (``exists`` is False for a prefix), so the files are
    matched and deleted one by one, then the local folder, if any, is removed.
    """
    staging = FileSystems.join(root, "_staging", run_id)
    try:
        leftovers = [m.path for r in FileSystems.match([FileSystems.join(staging, "**")])
                     for m in r.metadata_list]
        if leftovers:
            FileSystems.delete(leftovers)
        if FileSystems.exists(staging):
            FileSystems.delete([staging])
    except OSError:
        pass
