"""Window document frequency: what many articles of the current window share counts less.

The lexical channels weigh a word by how rare it is in its language (``wordfreq``), which
says nothing about the stream at hand: in a week of war news from one region, Ukraine,
Kursk, Zelensky or "drone" are in a large share of the articles, and two reports of
different events of that week share them as readily as two reports of one event. This
module counts, per window of the stream, in how many articles each sketch feature occurs
(its document frequency, DF) and weighs every sketch of the window by it before any pair is
scored:

* :class:`DocumentFrequencyFn` is a ``CombineFn`` over the window's sketches: the number
  of articles and, per feature id (term, name, number and character-gram hashes of
  :class:`~transforms.stories.similarity.Sketch`), the number of articles holding it. Its
  output keeps only the features common enough to be weighed down (a small table);
* :func:`window_factor` turns a DF into a weight factor: 1 for a feature found in at most
  :data:`COMMON_SHARE` of the window's articles (or fewer than :data:`MIN_DF` of them),
  falling with the log of its share to 0 for a feature every article holds;
* :func:`reweigh` applies the table to one sketch: the packed term, name and gram vectors
  are scaled feature by feature and normalised again, lead words weighed below
  :data:`LEAD_KEEP` leave the lead, and the blocking keys are reordered so that the ones
  common in the window come last (an article is kept in state under its first keys only);
* :class:`WeighByWindowFrequency` wires the two into a pipeline: the table is combined
  over the window's items and handed to :data:`SHARDS` groups of them by a GroupByKey.

The same transform runs in batch (one window: the whole batch) and in the continuous
pipeline (one table per poll window, computed from that window's articles). In the
continuous case a window's table is complete when the window closes, which is when the
stage's first grouping by key releases that window's items anyway: the step holds nothing
back that was not held already, and it reads nothing from earlier windows. A window of fewer
than :data:`MIN_ARTICLES` articles is left as it is, since a handful of articles says
nothing about what is common in a stream.

Everything here is deterministic: the table is a sum of counts, whatever the order in
which the runner combines them, and the weighing is a pure function of the sketch and
the table. Run the unit tests with::

    .venv/bin/python -m pytest tests/test_frequency.py -q
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.stories.similarity import Sketch
from transforms.util import NAMESPACE

MIN_ARTICLES = 20
"""Windows with fewer articles are not weighed: their counts say little."""
MIN_DF = 3
"""A feature found in fewer articles of the window keeps its weight, whatever the share."""
COMMON_SHARE = 0.05
"""A feature in at most this share of the window's articles keeps its full weight."""
LEAD_KEEP = 0.5
"""Lead words weighed below this factor leave the lead (they no longer single out a story)."""
VECTOR_KEY = "e"
"""Prefix of the encoder's blocking keys: they are not words and are never reordered."""


class WindowFrequency(NamedTuple):
    """The weighing table of one window: article count and the factor of each common
    feature id (features not listed keep their weight)."""

    articles: int
    factors: dict[int, float]


def window_factor(df: int, articles: int, common_share: float = COMMON_SHARE,
                  min_df: int = MIN_DF) -> float:
    """Weight factor in [0, 1] of a feature found in ``df`` of a window's ``articles``.

    1 up to ``common_share`` of the articles (or under ``min_df`` of them); above that,
    ``log(articles / df) / log(1 / common_share)``: a feature in every article weighs 0.
    """
    if articles < MIN_ARTICLES or df < min_df or df <= common_share * articles:
        return 1.0
    return max(0.0, min(1.0, math.log(articles / df) / math.log(1.0 / common_share)))


def _ids(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype=np.uint32)


def sketch_features(sketch: Sketch) -> set[int]:
    """The distinct feature ids of a sketch that the window counts (terms, names and
    numbers, character grams)."""
    out: set[int] = set()
    for packed in (sketch.terms, sketch.names, sketch.grams):
        out.update(_ids(packed).tolist())
    return out


def key_feature(key: str) -> int | None:
    """The feature id a lexical blocking key stands for (None for the encoder's keys).

    A name key ``n:skel`` is the name feature ``crc32("n:skel")``; a word key ``w:form``
    is the term feature ``crc32("form")`` (see the similarity's sketch).
    """
    if key.startswith("n:"):
        return zlib.crc32(key.encode("utf-8"))
    if key.startswith("w:"):
        return zlib.crc32(key[2:].encode("utf-8"))
    return None


class DocumentFrequencyFn(beam.CombineFn):
    """Sketches of one window → :class:`WindowFrequency` (the input is each article's
    :func:`sketch_features`, as a list of ids).

    The accumulator is ``(articles, Counter of ids)``; the output keeps the ids whose
    :func:`window_factor` is under 1.
    """

    def __init__(self, common_share: float = COMMON_SHARE, min_df: int = MIN_DF):
        self._share = common_share
        self._min_df = min_df

    def create_accumulator(self) -> tuple[int, Counter]:
        return 0, Counter()

    def add_input(self, acc: tuple[int, Counter], ids: Iterable[int]) -> tuple[int, Counter]:
        n, counts = acc
        counts.update(set(ids))
        return n + 1, counts

    def merge_accumulators(self, accs: Iterable[tuple[int, Counter]]) -> tuple[int, Counter]:
        n, total = 0, Counter()
        for k, counts in accs:
            n += k
            total.update(counts)
        return n, total

    def extract_output(self, acc: tuple[int, Counter]) -> WindowFrequency:
        n, counts = acc
        factors = {}
        for fid, df in counts.items():
            f = window_factor(df, n, self._share, self._min_df)
            if f < 1.0:
                factors[fid] = f
        return WindowFrequency(n, factors)


def _scaled(ids: bytes, weights: bytes, factors: dict[int, float]) -> tuple[bytes, bytes]:
    """A packed vector with each weight times its factor, L2-normalised again (uint8)."""
    if not ids:
        return ids, weights
    id_arr = _ids(ids)
    f = np.fromiter((factors.get(i, 1.0) for i in id_arr.tolist()), dtype=np.float64,
                    count=len(id_arr))
    if bool(np.all(f == 1.0)):
        return ids, weights
    w = np.frombuffer(weights, dtype=np.uint8).astype(np.float64) * f
    norm = float(np.linalg.norm(w))
    if norm == 0.0:
        return b"", b""
    q = np.clip(np.round(w / norm * 255.0), 0, 255).astype(np.uint8)
    keep = q > 0
    return id_arr[keep].tobytes(), q[keep].tobytes()


def reweigh(sketch: Sketch, table: WindowFrequency | None) -> Sketch:
    """``sketch`` weighed by its window's table (unchanged without one).

    Term, name and gram vectors are scaled per feature and normalised again (a feature
    weighed to 0 leaves the vector); lead words under :data:`LEAD_KEEP` leave the lead;
    lexical blocking keys are stably reordered by falling factor, so the article is kept
    in state under the keys that single it out in this window (the encoder's keys stay
    last, as they were).
    """
    if table is None or not table.factors:
        return sketch
    factors = table.factors
    terms, term_w = _scaled(sketch.terms, sketch.term_weights, factors)
    names, name_w = _scaled(sketch.names, sketch.name_weights, factors)
    grams, gram_w = _scaled(sketch.grams, sketch.gram_weights, factors)
    lead = _ids(sketch.lead)
    kept_lead = [i for i in lead.tolist() if factors.get(i, 1.0) >= LEAD_KEEP]
    lead_b = (sketch.lead if len(kept_lead) == len(lead)
              else np.array(kept_lead, dtype=np.uint32).tobytes())
    lexical = [k for k in sketch.keys if not k.startswith(VECTOR_KEY)]
    vector = [k for k in sketch.keys if k.startswith(VECTOR_KEY)]

    def key_rank(pair: tuple[int, str]) -> tuple[float, int]:
        fid = key_feature(pair[1])
        return (-(factors.get(fid, 1.0) if fid is not None else 1.0), pair[0])

    keys = tuple(k for _, k in sorted(enumerate(lexical), key=key_rank)) + tuple(vector)
    return replace(sketch, terms=terms, term_weights=term_w, names=names,
                   name_weights=name_w, grams=grams, gram_weights=gram_w, lead=lead_b,
                   keys=keys)


SHARDS = 16
"""The window's items are weighed in this many groups, each of which gets the table."""


def shard_of(item: Any) -> int:
    """The group an item is weighed in (CRC-32 of its id: the same on every worker)."""
    return zlib.crc32(item.article_id.encode("utf-8")) % SHARDS


class WeighShardFn(beam.DoFn):
    """One shard's grouped messages (``("item", item)`` and at most one ``("table",
    WindowFrequency)``) → its items, each sketch weighed by the table (items are anything
    with a ``sketch`` field and ``_replace``)."""

    def __init__(self):
        self.weighed = Metrics.counter(NAMESPACE, "story_sketches_weighed")

    def process(self, element: tuple[int, Iterable[tuple[str, Any]]]) -> Iterator[Any]:
        items, table = [], None
        for tag, value in element[1]:
            if tag == "table":
                table = value
            else:
                items.append(value)
        if table is None or not table.factors:
            yield from items
            return
        self.weighed.inc(len(items))
        for item in items:
            yield item._replace(sketch=reweigh(item.sketch, table))


class WeighByWindowFrequency(beam.PTransform):
    """Story items of a window → the same items, sketches weighed by the window's DF.

    Items already written (re-run seeds, ``seed_story`` set) are weighed but not counted:
    the table describes what this window brings. ``common_share`` and ``min_df`` are
    :func:`window_factor`'s.

    The table reaches the items through a grouping rather than a side input: each of
    :data:`SHARDS` groups of the window's items gets a copy of it. A grouping behaves the
    same on every runner, batch or streaming, where a windowed side input read after the
    story stage's stateful steps stalled the legacy direct runner (its side-input wait
    met a bundle that had no window).
    """

    def __init__(self, common_share: float = COMMON_SHARE, min_df: int = MIN_DF):
        super().__init__()
        self._share = common_share
        self._min_df = min_df

    def expand(self, items):
        table = (items
                 | "NewItems" >> beam.Filter(lambda i: getattr(i, "seed_story", None) is None)
                 | "SketchFeatures" >> beam.Map(lambda i: sorted(sketch_features(i.sketch)))
                 | "CountInWindow" >> beam.CombineGlobally(
                     DocumentFrequencyFn(self._share, self._min_df)).without_defaults()
                 | "TableToShards" >> beam.FlatMap(
                     lambda t: [(k, ("table", t)) for k in range(SHARDS)])
                 .with_output_types(tuple[int, Any]))
        keyed = (items | "ItemsToShards" >> beam.Map(lambda i: (shard_of(i), ("item", i)))
                 .with_output_types(tuple[int, Any]))
        return ((keyed, table)
                | "WithTables" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WeighSketches" >> beam.ParDo(WeighShardFn()))
