"""Cost of the story stage alone: articles per second and state bytes per article.

Builds articles from real texts under ``../shared/corpora/`` (BBC topics-dev and the
multilingual stories-dev pairs; exits with a message when missing), spread over three
days with a fixed seed, and measures:

* sketching alone (pure Python, one process): articles/s;
* the pure-Python floor: sketching, grouping by blocking key, comparing within each
  group (:func:`transforms.stories.matches_in_group`) and choosing parents, no Beam;
* :class:`transforms.stories.AssignStories` alone on the FnApiRunner in one process
  (one core): articles/s, wall clock from ``run()`` to the end of the pipeline, and
  apart the time the same pipeline with a no-op step instead of the stage takes
  (``beam.Create`` pickles and compresses the articles: a harness cost, not the stage's);
* state per retained article: the encoded size of what the stage's keyed state would
  hold at the end of the batch under a repeating trigger (with the default trigger the
  stage keeps no keyed state at all) (each blocking key's pruned list of recent items, plus the
  content-hash winners), divided by the number of articles kept.

Run::

    .venv/bin/python bench/bench_dedup_cost.py [--n 2000]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import pickle
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import SCHEMA_VERSION, Article  # noqa: E402
from transforms.similarity import (  # noqa: E402
    StorySimilarity,
    make_similarity,
)
from transforms.stories import (  # noqa: E402
    DEFAULT_WINDOW,
    MAX_PER_KEY,
    AssignStories,
    StoryPoolCoder,
    choose_parent,
    event_time,
    indexed_under,
    make_item,
    matches_in_group,
)
from transforms.text import content_hash  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpora"
BBC = SHARED / "topics-dev" / "bbc-dev.csv"
PAIRS = SHARED / "stories-dev" / "article-pairs-dev.csv"
T0 = dt.datetime(2024, 11, 22, tzinfo=dt.UTC)


def load(n: int, seed: int) -> list[Article]:
    for path in (BBC, PAIRS):
        if not path.exists():
            raise SystemExit(f"{path} is missing: this benchmark needs ../shared/corpora/.")
    texts = [("en", r["text"]) for r in csv.DictReader(BBC.open(encoding="utf-8"))]
    for r in csv.DictReader(PAIRS.open(encoding="utf-8")):
        texts += [(r["lang1"], r["text1"]), (r["lang2"], r["text2"])]
    rng = random.Random(seed)
    rng.shuffle(texts)
    out = []
    for i, (lang, text) in enumerate(texts[:n]):
        title, _, body = text.strip().partition("\n")
        body = body or title
        when = T0 + dt.timedelta(seconds=rng.randrange(72 * 3600))
        aid = f"a{i:06d}"
        out.append(Article(
            article_id=aid, url=f"https://example.org/{aid}", feed_url="", source="bench",
            title=title[:300], body=body, body_source="backfill", authors=[],
            published_at=when, fetched_at=when, language=lang, language_confidence=None,
            topic="unclassified", topic_code=None, topic_source="none", categories=[],
            content_hash=content_hash(body), story_id=aid, is_story_lead=True,
            story_similarity=None, date=when.strftime("%Y-%m-%d"),
            schema_version=SCHEMA_VERSION))
    return out


KINDS = ("multilingual", "lexical")
"""The similarities measured (``make_similarity`` names)."""


def state_bytes(sim: StorySimilarity, articles: list[Article]) -> tuple[int, int]:
    """Pickled bytes held by the stage's keyed state at the end of the batch."""
    by_key = defaultdict(list)
    winners = {}
    for a in articles:
        item = make_item(sim, a.article_id, a.title, a.body, a.language, event_time(a),
                         a.content_hash)
        winners.setdefault(a.content_hash, a.article_id)
        for k in item.sketch.keys:
            if indexed_under(item, k):
                by_key[k].append(item)
    window = int(DEFAULT_WINDOW.total_seconds() * 1_000_000)
    total = sum(len(pickle.dumps(h)) + len(pickle.dumps(w)) for h, w in winners.items())
    for key, items in by_key.items():
        items.sort(key=lambda i: i.order)
        newest = items[-1].micros
        # What CompareWithinKeyFn writes: the window's items, blocking keys stripped.
        pool = [i._replace(sketch=dataclasses.replace(i.sketch, keys=())) for i in items
                if newest - i.micros <= window][-MAX_PER_KEY:]
        total += len(StoryPoolCoder().encode(pool)) + len(key.encode())
    return total, len(winners)


def pure_floor(sim: StorySimilarity, articles: list[Article]) -> tuple[float, int]:
    """Seconds for the stage's work without Beam: sketch, compare per key, pick parents."""
    window = int(DEFAULT_WINDOW.total_seconds() * 1_000_000)
    started = time.perf_counter()
    items = {}
    for a in articles:
        items.setdefault(a.content_hash, make_item(
            sim, a.article_id, a.title, a.body, a.language, event_time(a), a.content_hash))
    by_key = defaultdict(list)
    for item in items.values():
        for k in item.sketch.keys:
            by_key[k].append(item)
    edges = defaultdict(list)
    for key, group in by_key.items():
        group.sort(key=lambda i: i.order)
        for aid, edge in matches_in_group(sim, [], group, sim.threshold, window, MAX_PER_KEY,
                                          key):
            edges[aid].append(edge)
    parents = {aid: choose_parent(found) for aid, found in edges.items()}
    return time.perf_counter() - started, sum(p is not None for p in parents.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--similarity", nargs="+", choices=KINDS,
                        default=["multilingual", "lexical"],
                        help="Similarities to measure, one after the other in this run.")
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/bench_dedup_cost.py --n {args.n} --seed {args.seed} "
          f"--similarity {' '.join(args.similarity)}")
    articles = load(args.n, args.seed)
    chars = sum(len(a.body) for a in articles) / len(articles)
    print(f"articles: {len(articles)}, mean body {chars:.0f} chars, "
          f"{len({a.language for a in articles})} languages")
    for kind in args.similarity:
        measure(kind, articles)


def measure(kind: str, articles: list[Article]) -> None:
    """All figures for one similarity, printed under its name."""
    sim = make_similarity(kind)
    print(f"similarity {kind}:")
    sim.sketch("warm", "up the lemmatiser, frequency tables and encoder", "en")
    for lang in sorted({a.language for a in articles}):
        sim.sketch("", "warm up the tables of this language", lang)
    started = time.perf_counter()
    for a in articles:
        sim.sketch(a.title, a.body, a.language)
    took = time.perf_counter() - started
    print(f"  sketching alone: {len(articles) / took:.0f} articles/s")
    took, linked = pure_floor(sim, articles)
    print(f"  pure-Python floor (sketch + compare + choose parent, no Beam): "
          f"{len(articles) / took:.0f} articles/s ({took:.1f} s, {linked} with a parent)")

    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1"])
    p = beam.Pipeline(options=options)
    _ = p | beam.Create(articles) | AssignStories(sim)
    started = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    took = time.perf_counter() - started
    counts = {c.key.metric.name: c.committed
              for c in result.metrics().query(MetricsFilter())["counters"]}
    print(f"  AssignStories on FnApiRunner, 1 worker: {len(articles) / took:.0f} articles/s "
          f"({took:.1f} s); counters: " + ", ".join(
              f"{k}={counts.get(k, 0)}" for k in ("story_leads", "story_echoes",
                                                  "duplicates_content", "duplicates_near",
                                                  "story_pairs_compared")))
    p = beam.Pipeline(options=options)
    _ = p | beam.Create(articles) | beam.Map(lambda a: None)
    started = time.perf_counter()
    p.run().wait_until_finish()
    print(f"  of which the harness (beam.Create of the articles and a no-op step alone): "
          f"{time.perf_counter() - started:.1f} s")
    total, kept = state_bytes(sim, articles)
    print(f"  keyed state at end of batch: {total} bytes, {total / max(1, kept):.0f} bytes "
          f"per retained article ({kept} retained)")

if __name__ == "__main__":
    main()
