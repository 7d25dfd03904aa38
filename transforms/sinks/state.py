"""Durable state of a continuous run, kept under ``DIR/_state/`` beside the tables.

The local ``newsbeam watch`` loop restarts from these files:

* ``feeds.json``: per feed URL, its :class:`~transforms.feeds.polling.FeedState` (validators,
  failures, when it may be polled again);
* ``seen.json``: which feed listed which item (``listed``) and which article was kept for
  each canonical URL and GUID (``kept``), each with the time it was last seen;
* ``journal-<run_id>.json``: written before a cycle's pipeline runs, naming the entries it
  carries and the feed states to adopt; it is folded into the two files above once the
  cycle's output is published (or, after a crash, by the next start).

Every file is replaced atomically (written to a ``.tmp`` name, flushed, fsynced, renamed),
so a crash leaves either the old or the new version, never half of one. The folder name
starts with ``_``, which readers of the tables do not descend into when they read
``DIR/articles``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = "_state"


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Replaces ``path`` with ``obj`` as JSON, atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # make the rename itself durable
    finally:
        os.close(fd)


def read_json(path: str | Path, default: Any) -> Any:
    """The JSON in ``path``, or ``default`` if the file does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


@dataclass
class SeenIndex:
    """Earlier sightings: ``listed`` key → last seen; ``kept`` key → [article_id, last seen].

    Keys come from :func:`transforms.feeds.polling.listing_keys` and
    :func:`transforms.feeds.polling.kept_keys`. Times are POSIX seconds.
    """

    listed: dict[str, float] = field(default_factory=dict)
    kept: dict[str, list] = field(default_factory=dict)

    def mark_listed(self, keys: Iterable[str], now: float) -> None:
        for k in keys:
            self.listed[k] = now

    def keep(self, keys: Iterable[str], article_id: str, now: float) -> None:
        for k in keys:
            current = self.kept.get(k)
            # The first article kept for a key stays the one duplicates point at.
            self.kept[k] = [current[0] if current else article_id, now]

    def forget_before(self, cutoff: float, listing_at: dict[str, float]) -> int:
        """Forgets sightings older than ``cutoff`` that their feed no longer lists.

        A key of feed F last seen before F's latest full listing (``listing_at[F]``) has
        dropped off F; one seen at or after it may still be listed behind 304s.
        """
        before = len(self.listed) + len(self.kept)
        self.listed = {
            k: t for k, t in self.listed.items()
            if t >= cutoff or t >= listing_at.get(k.split(" ", 1)[0], 0.0)}
        self.kept = {k: v for k, v in self.kept.items() if v[1] >= cutoff}
        return before - len(self.listed) - len(self.kept)

    def to_json(self) -> dict[str, Any]:
        return {"listed": self.listed, "kept": self.kept}

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> SeenIndex:
        obj = obj or {}
        return cls(dict(obj.get("listed", {})), {k: list(v) for k, v in
                                                  obj.get("kept", {}).items()})


class StateStore:
    """The files under ``DIR/_state/`` (local folders only)."""

    def __init__(self, root: str):
        if "://" in root:
            raise ValueError(f"{root}: watch mode keeps its state in a local folder; "
                             "use a streaming runner for object-store outputs")
        self.dir = Path(root, STATE_DIR)

    def load_feeds(self) -> dict[str, dict]:
        return read_json(self.dir / "feeds.json", {})

    def load_seen(self) -> SeenIndex:
        return SeenIndex.from_json(read_json(self.dir / "seen.json", None))

    def save(self, feeds: dict[str, dict], seen: SeenIndex) -> None:
        """Writes both files; seen first, so feed validators never run ahead of it."""
        write_json_atomic(self.dir / "seen.json", seen.to_json())
        write_json_atomic(self.dir / "feeds.json", feeds)

    def journal_path(self, run_id: str) -> Path:
        return self.dir / f"journal-{run_id}.json"

    def write_journal(self, run_id: str, journal: dict[str, Any]) -> None:
        write_json_atomic(self.journal_path(run_id), journal)

    def journals(self) -> list[tuple[str, dict[str, Any]]]:
        """Journals of cycles not yet folded in, oldest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("journal-*.json")):
            out.append((p.name[len("journal-"):-len(".json")], read_json(p, {})))
        return out

    def drop_journal(self, run_id: str) -> None:
        self.journal_path(run_id).unlink(missing_ok=True)
