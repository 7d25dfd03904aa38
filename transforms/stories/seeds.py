"""Seeds of the story stage: articles an earlier run already wrote, read back so that a
re-run or a later batch joins their stories instead of opening new ones.

:class:`~transforms.stories.stage.AssignStories` (with ``existing``) lists the published
article files whose date partition lies within the story window of the batch's dates
(:func:`event_bounds`, :class:`ListSeedFilesFn`), reads each back
(:class:`ReadSeedsFn`) and sketches it as a seed :class:`StoryItem` carrying its
``story_id``: seeds are decided already, come first in every ordering and are never
written again.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.stories.messages import StoryItem, make_item
from transforms.stories.similarity import StorySimilarity, load_models
from transforms.util import NAMESPACE

SEED_COLUMNS = ["article_id", "title", "body", "language", "published_at", "fetched_at",
                "content_hash", "story_id"]
_DATE_DIR = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def seed_files(root: str, run_id: str | None, lo: dt.date | None,
               hi: dt.date | None) -> list[str]:
    """Published article files under ``root/articles`` whose date partition is in range."""
    pattern = FileSystems.join(root, "articles", "**", "*.parquet")
    try:
        found = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - a missing folder is an empty output
        return []
    out = []
    for path in sorted(found):
        name = path.rsplit("/", 1)[-1]
        if name.startswith(("_", ".")) or (run_id and f"part-{run_id}-" in name):
            continue
        m = _DATE_DIR.search(path.replace("\\", "/"))
        if m and lo and hi:
            day = dt.date.fromisoformat(m.group(1))
            if not lo <= day <= hi:
                continue
        out.append(path)
    return out


class ListSeedFilesFn(beam.DoFn):
    """Lists the article files a batch's stories may join (window around its dates)."""

    def __init__(self, root: str, run_id: str | None, window: dt.timedelta):
        self._root = root
        self._run_id = run_id
        self._window = window

    def process(self, _, bounds) -> Iterator[str]:
        if bounds is None:
            return
        lo = (bounds[0] - self._window).date()
        hi = (bounds[1] + self._window).date()
        yield from seed_files(self._root, self._run_id, lo, hi)


class ReadSeedsFn(beam.DoFn):
    """Reads one published article file back into seed StoryItems, keyed by id as
    :class:`SketchArticleFn` gives them."""

    def __init__(self, similarity: StorySimilarity):
        self._sim = similarity
        self._models: object = None
        self.seeds = Metrics.counter(NAMESPACE, "story_seeds_read")

    def setup(self) -> None:
        self._models = load_models(self._sim)

    def process(self, path: str) -> Iterator[tuple[str, StoryItem]]:
        import pyarrow.parquet as pq

        with FileSystems.open(path) as f:
            table = pq.read_table(f, columns=SEED_COLUMNS)
        for row in table.to_pylist():
            when = row["published_at"] or row["fetched_at"]
            self.seeds.inc()
            yield row["article_id"], make_item(
                self._sim, row["article_id"], row["title"], row["body"], row["language"],
                when, row["content_hash"], seed_story=row["story_id"] or row["article_id"])


def event_bounds(pairs: Iterable[tuple[dt.datetime, dt.datetime]]) -> tuple | None:
    # Inputs and outputs have the same shape: Beam applies a callable combiner to both.
    pairs = [p for p in pairs if p is not None]
    if not pairs:
        return None
    return (min(p[0] for p in pairs), max(p[1] for p in pairs))
