"""Near-identical copy detection on perturbed real articles (benchmark, not a test).

Reads real article bodies from ``../shared/corpora/`` (BBC topics-dev and the texts of
stories-dev article pairs; exits with a message when missing) and builds, with a fixed
seed, a labelled set:

* positives: an article and a copy of it with boilerplate added, sentences reordered
  and dropped, and 5-20% of its words replaced by words from other articles;
* negatives: pairs of unrelated articles, and (reported apart) same-story pairs written
  by different outlets, which must stay echoes, not copies.

It scores :func:`transforms.stories.similarity.near_duplicate` with its fixed defaults (nothing
is tuned here), alone and behind the blocking keys the stage uses (a copy is only found
when the two sketches share a key). Run::

    .venv/bin/python bench/bench_neardup.py [--n 600]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.stories.similarity import LexicalSimilarity, near_duplicate  # noqa: E402

SHARED = Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared")) / "corpora"
"""``../shared/corpora`` beside the repository, or ``$NEWSBEAM_SHARED/corpora``."""
BBC = SHARED / "topics-dev" / "bbc-dev.csv"
PAIRS = SHARED / "stories-dev" / "article-pairs-dev.csv"
BOILERPLATE = [
    "Subscribe to our newsletter to get the day's top stories in your inbox.",
    "Advertisement",
    "Follow us on social media. Share this article with your friends.",
    "Copyright 2024. All rights reserved. This material may not be republished.",
    "Read more: the latest news from our correspondents around the world.",
    "Related topics: politics, economy, world",
]


def perturb(text: str, vocabulary: list[str], rng: random.Random) -> str:
    """A lightly edited re-post of ``text``."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if len(sentences) > 3:  # reorder a few neighbouring sentences
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(sentences) - 1)
            sentences[i], sentences[i + 1] = sentences[i + 1], sentences[i]
    drop = int(len(sentences) * rng.uniform(0.0, 0.2))
    for _ in range(drop):
        if len(sentences) > 2:
            sentences.pop(rng.randrange(len(sentences)))
    words = " ".join(sentences).split(" ")
    rate = rng.uniform(0.05, 0.20)
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(vocabulary)
    head = rng.sample(BOILERPLATE, rng.randint(0, 2))
    tail = rng.sample(BOILERPLATE, rng.randint(1, 3))
    return "\n\n".join([*head, " ".join(words), *tail])


def load_texts() -> tuple[list[tuple[str, str]], list[tuple[str, str, str, str]]]:
    for path in (BBC, PAIRS):
        if not path.exists():
            raise SystemExit(f"{path} is missing: this benchmark needs ../shared/corpora/.")
    texts = [("en", r["text"]) for r in csv.DictReader(BBC.open(encoding="utf-8"))]
    same_story = []
    for r in csv.DictReader(PAIRS.open(encoding="utf-8")):
        texts.append((r["lang1"], r["text1"]))
        if float(r["Overall"]) <= 1.5:
            same_story.append((r["lang1"], r["text1"], r["lang2"], r["text2"]))
    return [t for t in texts if len(t[1]) >= 400], same_story


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600, help="positives and negatives each")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/bench_neardup.py --n {args.n} --seed {args.seed}")
    rng = random.Random(args.seed)
    texts, same_story = load_texts()
    vocabulary = [w for _, t in rng.sample(texts, 200) for w in t.split() if w.isalpha()]
    sim = LexicalSimilarity()
    started = time.perf_counter()
    pos = neg = tp = fp = tp_blocked = fp_blocked = 0
    for _ in range(args.n):
        lang, text = rng.choice(texts)
        a = sim.sketch("", text, lang)
        b = sim.sketch("", perturb(text, vocabulary, rng), lang)
        pos += 1
        hit = near_duplicate(b, a) is not None
        tp += hit
        tp_blocked += hit and bool(set(a.keys) & set(b.keys))
    for _ in range(args.n):
        (la, ta), (lb, tb) = rng.sample(texts, 2)
        a, b = sim.sketch("", ta, la), sim.sketch("", tb, lb)
        neg += 1
        hit = near_duplicate(b, a) is not None
        fp += hit
        fp_blocked += hit and bool(set(a.keys) & set(b.keys))
    echo_as_copy = sum(near_duplicate(sim.sketch("", t2, l2), sim.sketch("", t1, l1)) is not None
                       for l1, t1, l2, t2 in same_story)
    took = time.perf_counter() - started

    def prf(t: int, f: int) -> str:
        p = t / max(1, t + f)
        r = t / max(1, pos)
        return f"precision={p:.4f} recall={r:.4f} (tp={t} fp={f} of {pos} copies, {neg} unrelated)"

    print(f"texts available: {len(texts)}; {took:.1f} s")
    print("  near_duplicate alone:       " + prf(tp, fp))
    print("  behind the blocking keys:   " + prf(tp_blocked, fp_blocked))
    print(f"  same-story echo pairs (different outlets) called copies: {echo_as_copy} of "
          f"{len(same_story)}")


if __name__ == "__main__":
    main()
