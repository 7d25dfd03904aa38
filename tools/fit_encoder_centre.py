"""Writes ``transforms/data/encoder_centre.json``: the mean encoder vector of news texts.

The multilingual encoder's vectors all lean one way, so the blocking keys taken from them
(:func:`transforms.stories.similarity.vector_keys`) project each vector from this centre. The
centre is the mean of the unit-length (4-bit quantised, as sketches keep them) vectors of
the headline and lead of every text of the shared stories-dev article pairs: the texts
only, no rating is read.

Run (needs ``../shared`` beside the repository, or ``$NEWSBEAM_SHARED``)::

    .venv/bin/python tools/fit_encoder_centre.py
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.stories.similarity import (  # noqa: E402
    CENTRE_FILE,
    ENCODER_LANGUAGES,
    encode_meaning,
    meaning_text,
    quantize,
    unit_vector,
)

SHARED = Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared"))
PAIRS = SHARED / "corpora" / "stories-dev" / "article-pairs-dev.csv"


def split_title(text: str) -> tuple[str, str]:
    """The corpus texts start with the headline on its own line: (title, body)."""
    head, sep, rest = text.partition("\n")
    if sep and 0 < len(head.strip()) <= 300:
        return head.strip(), rest
    return "", text


def main() -> None:
    if not PAIRS.exists():
        raise SystemExit(f"{PAIRS} is missing: set NEWSBEAM_SHARED or put ../shared beside "
                         "the repository.")
    texts = {}
    for row in csv.DictReader(PAIRS.open(encoding="utf-8")):
        for key in ("1", "2"):
            if row["lang" + key] in ENCODER_LANGUAGES:
                texts.setdefault(row["text" + key], meaning_text(*split_title(row["text" + key])))
    ordered = list(texts.values())
    vectors = [unit_vector(quantize(v)) for i in range(0, len(ordered), 64)
               for v in encode_meaning(ordered[i:i + 64])]
    centre = np.mean(vectors, axis=0)
    out = ROOT / "transforms" / "data" / CENTRE_FILE
    out.write_text(json.dumps({
        "source": "mean unit vector of the headline and lead of the "
                  f"{len(texts)} distinct texts of stories-dev/article-pairs-dev.csv",
        "command": ".venv/bin/python tools/fit_encoder_centre.py",
        "centre": [round(float(x), 5) for x in centre]}, indent=None) + "\n",
        encoding="utf-8")
    print(f"{out}: centre of {len(texts)} texts, norm {np.linalg.norm(centre):.3f}")


if __name__ == "__main__":
    main()
