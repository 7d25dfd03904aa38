"""Cost of the story stage alone: articles per second and state bytes per article.

Builds articles from real texts under ``../shared/corpora/`` (BBC topics-dev and the
multilingual stories-dev pairs; exits with a message when missing), spread over three
days with a fixed seed, and measures, for each similarity:

* sketching alone (pure Python, one process): articles/s;
* the pure-Python floor: sketching, grouping by blocking key, comparing within each
  group (:func:`transforms.stories.stage.matches_in_group`) and choosing parents, no Beam;
* :class:`transforms.stories.stage.AssignStories` on the FnApiRunner in one process (one core).
  The articles are written to a local file (pickled records) before any timer starts; a
  ``ReadArticles`` step reads them back into the pipeline. The same pipeline with a no-op
  step in place of the stage is the harness (runner start-up, reading and unpickling the
  articles); the stage's own time is the pipeline's wall clock (from ``run()`` to its end)
  minus the harness's, and its articles/s are computed on that. The first run also
  collects every decision (``story_id``, lead flag, similarity; duplicates and what they
  copy) into a digest, so that two revisions can be compared on the same input
  (``--assignments FILE`` writes them out in full);
* per-word caches (lemmas, transliterations, token plans, character grams, and
  simplemma's own cache of lemmas where the lemmatiser keeps one): every timed pass above
  starts with them empty, as a fresh worker does (the tables of lemmas and word
  frequencies stay loaded: a warm-up sketches one text per language before the timers).
  The stage is then also timed with the caches as its own runs left them, filled by these
  same articles: an upper bound for a worker that has met these words before;
* state per retained article: the encoded size of what the stage's keyed state would
  hold at the end of the batch under a repeating trigger (with the default trigger the
  stage keeps no keyed state at all) (each blocking key's pruned list of recent items, plus the
  content-hash winners), divided by the number of articles kept.

The machine is shared: every timed pass runs ``--repeat`` times (default 3) and both the
best run and the median are printed, with the load average when a similarity starts.

Run::

    .venv/bin/python bench/bench_dedup_cost.py [--n 2000] [--similarity lexical] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import SCHEMA_VERSION, Article  # noqa: E402
from transforms.extraction.text import content_hash  # noqa: E402
from transforms.stories import similarity  # noqa: E402
from transforms.stories.messages import make_item  # noqa: E402
from transforms.stories.similarity import (  # noqa: E402
    StorySimilarity,
    make_similarity,
)
from transforms.stories.stage import (  # noqa: E402
    DEFAULT_WINDOW,
    MAX_PER_KEY,
    AssignStories,
    StoryPoolCoder,
    choose_parent,
    event_time,
    indexed_under,
    kept_in_state,
    matches_in_group,
)

SHARED = Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared")) / "corpora"
"""``../shared/corpora`` beside the repository, or ``$NEWSBEAM_SHARED/corpora``."""
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


KINDS = ("multilingual", "lexical", "multilingual-e5")
"""The similarities measured (``make_similarity`` names)."""


def state_bytes(sim: StorySimilarity, articles: list[Article]) -> tuple[int, int]:
    """Encoded bytes held by the stage's keyed state at the end of the batch."""
    by_key = defaultdict(list)
    winners = {}
    for a in articles:
        item = make_item(sim, a.article_id, a.title, a.body, a.language, event_time(a),
                         a.content_hash)
        winners.setdefault(a.content_hash, a.article_id)
        for k in item.sketch.keys:
            if indexed_under(item, k) and kept_in_state(k):
                by_key[k].append(item)
    window = int(DEFAULT_WINDOW.total_seconds() * 1_000_000)
    # The content-hash winners: key and value both written as UTF-8 (StrUtf8Coder).
    total = sum(len(h.encode()) + len(w.encode()) for h, w in winners.items())
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


def clear_word_caches() -> None:
    """Empties the per-word caches of :mod:`transforms.stories.similarity` (tables stay loaded),
    and simplemma's own cache of lemmas where the similarity's lemmatiser keeps one."""
    for name, value in vars(similarity).items():
        if hasattr(value, "cache_clear") and name not in TABLES:
            value.cache_clear()
    lemmatizer = getattr(similarity, "_lemmatizer", None)
    lemmas = getattr(lemmatizer() if lemmatizer else None, "_cached_lemmatize", None)
    if hasattr(lemmas, "cache_clear"):
        lemmas.cache_clear()


TABLES = frozenset({"_frequencies", "_lemma_languages", "_lemmatizer", "_permutations",
                    "_load_encoder", "_offsets"})
"""Cached loaders of whole tables and models in :mod:`transforms.stories.similarity`: a worker
loads them once, so they stay loaded between the timed passes."""


def write_articles(articles: list[Article], path: Path) -> None:
    """The articles as a stream of pickled records (what ``ReadArticles`` reads back)."""
    with path.open("wb") as f:
        for a in articles:
            pickle.dump(a, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_articles(path: str) -> Iterator[Article]:
    """Reads back what :func:`write_articles` wrote, one article at a time."""
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


class CollectLinesFn(beam.DoFn):
    """Writes each bundle's lines to its own file in ``folder`` (one local process)."""

    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self) -> None:
        self._lines: list[str] = []

    def process(self, line: str) -> None:
        self._lines.append(line)

    def finish_bundle(self) -> None:
        if self._lines:
            name = Path(self._folder) / f"part-{uuid.uuid4().hex}.jsonl"
            name.write_text("\n".join(self._lines) + "\n", encoding="utf-8")


def decision_lines(out) -> Any:
    """Each article's story decision, and each dropped copy's, as a JSON line."""
    kept = out.articles | "ArticleDecision" >> beam.Map(
        lambda a: json.dumps(["article", a.article_id, a.story_id, a.is_story_lead,
                              a.story_similarity]))
    dropped = out.duplicates | "CopyDecision" >> beam.Map(
        lambda d: json.dumps(["duplicate", d.article_id, d.duplicate_of, d.level,
                              d.similarity]))
    return (kept, dropped) | "Decisions" >> beam.Flatten()


def run_pipeline(path: Path, step: beam.PTransform, collect: str | None = None) -> float:
    """Seconds from ``run()`` to the end of ``ReadArticles | step`` on the FnApiRunner."""
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1"])
    p = beam.Pipeline(options=options)
    out = (p
           | "ArticleFile" >> beam.Create([str(path)])
           | "ReadArticles" >> beam.FlatMap(read_articles)
           | "Step" >> step)
    if collect:
        _ = decision_lines(out) | "Collect" >> beam.ParDo(CollectLinesFn(collect))
    started = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    took = time.perf_counter() - started
    if collect:
        counts = {c.key.metric.name: c.committed
                  for c in result.metrics().query(MetricsFilter())["counters"]}
        print("    counters: " + ", ".join(
            f"{k}={counts.get(k, 0)}" for k in ("story_leads", "story_echoes",
                                                "duplicates_content", "duplicates_near",
                                                "story_pairs_compared")))
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="articles (default 2000)")
    parser.add_argument("--seed", type=int, default=3, help="shuffle seed (default 3)")
    parser.add_argument("--similarity", nargs="+", choices=KINDS,
                        default=["multilingual", "lexical"],
                        help="Similarities to measure, one after the other in this run "
                             "(default both).")
    parser.add_argument("--repeat", type=int, default=3,
                        help="times each timed pass runs; the best and the median are "
                             "printed (default 3)")
    parser.add_argument("--assignments", type=Path, default=None,
                        help="also write every decision of the stage, per similarity, to "
                             "FILE.<similarity>.json (default: digest only)")
    parser.add_argument("--common-share", type=float, default=None,
                        help="weigh sketches by the batch's document frequency "
                             "(AssignStories(common_share=...); default: the stage's "
                             "default, off)")
    args = parser.parse_args()
    stage_options = ({} if args.common_share is None
                     else {"common_share": args.common_share})
    print(f"command: .venv/bin/python bench/bench_dedup_cost.py --n {args.n} --seed {args.seed} "
          f"--similarity {' '.join(args.similarity)} --repeat {args.repeat}"
          + (f" --common-share {args.common_share}" if stage_options else ""))
    articles = load(args.n, args.seed)
    chars = sum(len(a.body) for a in articles) / len(articles)
    print(f"articles: {len(articles)}, mean body {chars:.0f} chars, "
          f"{len({a.language for a in articles})} languages")
    for kind in args.similarity:
        measure(kind, articles, args.assignments, max(1, args.repeat), stage_options)


def best_and_median(seconds: list[float]) -> tuple[float, float]:
    """The shortest and the median of the times of one pass."""
    return min(seconds), statistics.median(seconds)


def measure(kind: str, articles: list[Article], assignments: Path | None, repeat: int,
            stage_options: dict | None = None) -> None:
    """All figures for one similarity, printed under its name (each pass ``repeat`` times:
    the machine is shared, so the best run and the median are both printed)."""
    sim = make_similarity(kind)
    print(f"similarity {kind}: (load average {os.getloadavg()[0]:.2f})")
    sim.sketch("warm", "up the lemmatiser, frequency tables and encoder", "en")
    for lang in sorted({a.language for a in articles}):
        sim.sketch("", "warm up the tables of this language", lang)
    n = len(articles)
    sketching = []
    for _ in range(repeat):
        clear_word_caches()
        started = time.perf_counter()
        for a in articles:
            sim.sketch(a.title, a.body, a.language)
        sketching.append(time.perf_counter() - started)
    best, median = best_and_median(sketching)
    print(f"  sketching alone, per-word caches empty: {n / best:.0f} articles/s "
          f"(median {n / median:.0f}/s)")
    floor = []
    for _ in range(repeat):
        clear_word_caches()
        took, linked = pure_floor(sim, articles)
        floor.append(took)
    best, median = best_and_median(floor)
    print(f"  pure-Python floor (sketch + compare + choose parent, no Beam), caches empty: "
          f"{n / best:.0f} articles/s (median {n / median:.0f}/s; {linked} with a parent)")

    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        path = Path(tmp) / "articles.pickles"
        write_articles(articles, path)
        harness = best_and_median([run_pipeline(path, beam.Map(lambda a: None))
                                   for _ in range(repeat)])
        print(f"  harness (ReadArticles and a no-op step, FnApiRunner, 1 worker): "
              f"{harness[0]:.2f} s (median {harness[1]:.2f} s)")
        folder = Path(tmp) / "decisions"
        folder.mkdir()
        for caches in ("empty", "filled by these articles"):
            stage = []
            for i in range(repeat):
                if caches == "empty":
                    clear_word_caches()
                collect = str(folder) if caches == "empty" and i == 0 else None
                stage.append(run_pipeline(path, AssignStories(sim, **(stage_options or {})),
                                          collect))
                if collect:
                    print_decisions(folder, kind, assignments)
            best, median = best_and_median(stage)
            own = (best - harness[0], median - harness[1])
            print(f"  AssignStories, per-word caches {caches}: {own[0]:.2f} s its own, "
                  f"{n / own[0]:.0f} articles/s (median {own[1]:.2f} s, {n / own[1]:.0f}/s); "
                  f"{best:.2f} s with the harness ({n / best:.0f}/s)")
    total, kept = state_bytes(sim, articles)
    print(f"  keyed state at end of batch: {total} bytes, {total / max(1, kept):.0f} bytes "
          f"per retained article ({kept} retained)")


def print_decisions(folder: Path, kind: str, assignments: Path | None) -> None:
    """The digest of the decisions collected in ``folder`` (and the file, if asked)."""
    lines = sorted(line for f in folder.glob("part-*.jsonl")
                   for line in f.read_text(encoding="utf-8").splitlines())
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    print(f"    decisions: {len(lines)}, digest {digest}")
    if assignments:
        target = assignments.with_name(f"{assignments.name}.{kind}.json")
        target.write_text(json.dumps([json.loads(x) for x in lines], indent=0))


if __name__ == "__main__":
    main()
