"""Writes ``transforms/data/language_centres.json``: encoder centres per language, and the
offset that scores Ukrainian pairs on centred cosines (see :mod:`transforms.stories.centring`).

1. Centres: the mean unit vector (4-bit quantised, as sketches keep it) of the headline and
   lead of every text of the shared stories-dev article pairs, per language (texts only, no
   rating is read); Ukrainian, which that corpus lacks, from the Ukrainian articles of the
   dev week set (``tests/fixtures/stories/dev.jsonl``). The test week set is not read.
2. Offset: every pair of dev week articles in which one is Ukrainian and both are longer
   than a headline is scored by the multilingual similarity on centred cosines with no
   offset; the offset (a grid of 0.05 from -1 to 4) is the one with the best same-event F1
   at the model's threshold, ties to the smaller offset.

Run (needs ``../shared`` beside the repository, or ``$NEWSBEAM_SHARED``)::

    .venv/bin/python tools/fit_language_centres.py
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.fit_encoder_centre import split_title  # noqa: E402
from transforms.stories import centring  # noqa: E402
from transforms.stories.similarity import (  # noqa: E402
    SHORT_WORDS,
    MultilingualSimilarity,
    encode_meaning,
    meaning_text,
    quantize,
    unit_vector,
)

SHARED = Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared"))
PAIRS = SHARED / "corpora" / "stories-dev" / "article-pairs-dev.csv"
DEV_WEEK = ROOT / "tests" / "fixtures" / "stories" / "dev.jsonl"
OUT = ROOT / "transforms" / "data" / centring.CENTRES_FILE
LANGUAGES = ("uk",)
OFFSETS = np.round(np.arange(-1.0, 4.0001, 0.05), 2)


def mean_vectors(texts: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Per language, the mean quantised unit vector of (language, text) pairs."""
    by: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(texts), 64):
        chunk = texts[i:i + 64]
        for (lang, _), v in zip(chunk, encode_meaning([t for _, t in chunk]), strict=True):
            by.setdefault(lang, []).append(unit_vector(quantize(v)))
    return {lang: np.mean(vs, axis=0) for lang, vs in by.items()}


def write(centres: dict[str, np.ndarray], offset: float, counts: dict[str, int]) -> None:
    OUT.write_text(json.dumps({
        "written_by": "tools/fit_language_centres.py",
        "languages": list(LANGUAGES), "offset": offset, "texts": counts,
        "centres": {k: [round(float(x), 6) for x in v] for k, v in sorted(centres.items())},
    }, indent=1) + "\n", encoding="utf-8")
    for f in (centring._data, centring.centred_languages, centring.centred_offset,
              centring.centre):
        f.cache_clear()


def main() -> None:
    if not PAIRS.exists():
        raise SystemExit(f"{PAIRS} is missing: set NEWSBEAM_SHARED or put ../shared beside "
                         "the repository.")
    texts: dict[str, tuple[str, str]] = {}
    for row in csv.DictReader(PAIRS.open(encoding="utf-8")):
        for key in ("1", "2"):
            text = row["text" + key]
            texts.setdefault(text, (row["lang" + key], meaning_text(*split_title(text))))
    week = [json.loads(line) for line in DEV_WEEK.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    for r in week:
        if r["language"] in LANGUAGES:
            texts.setdefault(r["text"], (r["language"], meaning_text(r["title"], r["text"])))
    ordered = list(texts.values())
    counts = {lang: sum(1 for lg, _ in ordered if lg == lang)
              for lang in sorted({lg for lg, _ in ordered})}
    centres = mean_vectors(ordered)
    write(centres, 0.0, counts)

    sim = MultilingualSimilarity()
    sketches = [sim.sketch(r["title"], r["text"], r["language"]) for r in week]
    logits, gold = [], []
    for i, j in itertools.combinations(range(len(week)), 2):
        a, b = sketches[i], sketches[j]
        if not ({a.language, b.language} & set(LANGUAGES)) or min(a.words,
                                                                b.words) < SHORT_WORDS:
            continue
        p = min(max(sim.score(a, b), 1e-12), 1 - 1e-12)
        logits.append(math.log(p / (1 - p)))
        gold.append(week[i]["event"] == week[j]["event"])
    z, g = np.array(logits), np.array(gold)
    cut = math.log(sim.threshold / (1 - sim.threshold))
    best = (-1.0, 0.0)
    for off in OFFSETS:
        pred = z + off >= cut
        tp = int(np.sum(pred & g))
        f1 = 2 * tp / max(1, int(pred.sum() + g.sum()))
        best = max(best, (round(f1, 6), -float(off)))
        print(f"offset {off:+.2f}: joined {int(pred.sum())} of {len(g)} pairs, "
              f"{tp} of {int(g.sum())} same-event, F1 {f1:.3f}")
    offset = -best[1]
    write(centres, offset, counts)
    print(f"wrote {OUT.relative_to(ROOT)}: centres of {counts}; offset {offset:+.2f} "
          f"(dev week F1 {best[0]:.3f} on {len(g)} Ukrainian pairs)")


if __name__ == "__main__":
    main()
