"""Language centres of the encoder's vectors, for languages it was not trained on.

The packaged sentence encoder (USE multilingual v3) knows 15 languages; Ukrainian is not
one of them, but the encoder reads it through its Cyrillic vocabulary. Its Ukrainian
vectors sit in a region of their own, away from the vectors of the same story told in
English or Russian, so their raw cosines with other languages are low and say less than
the model that weighs them expects. Taking each vector from the mean vector of its
language (its *centre*) removes that offset: on the dev week set
(``tests/fixtures/stories/dev.jsonl``) the centred cosine ranks a Ukrainian article's
retellings above other events of the same days with an AUC of 0.97-0.99, against 0.89
for the raw cosine.

``transforms/data/language_centres.json`` (written by ``tools/fit_language_centres.py``)
holds the centres (the mean unit vector, as sketches quantise it, of the headline and lead
of news texts of each language) and the log-odds ``offset`` that puts a centred pair's
score on the decision point of the multilingual model, fitted on the dev week set's
Ukrainian pairs; :func:`centred_languages` are the languages it was fitted for. The
scoring is opt-in (``--story-similarity multilingual-uk``): see the README's Stories section
for what it gains and costs.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

CENTRES_FILE = "language_centres.json"


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(resources.files("transforms").joinpath("data", CENTRES_FILE)
                      .read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def centred_languages() -> frozenset[str]:
    """Languages outside the encoder's own whose pairs are scored on centred cosines."""
    return frozenset(_data()["languages"])


@functools.lru_cache(maxsize=1)
def centred_offset() -> float:
    """Log-odds added to a centred pair's score (fitted with the centres)."""
    return float(_data()["offset"])


@functools.lru_cache(maxsize=64)
def centre(language: str) -> np.ndarray | None:
    """The centre of ``language``'s vectors (float64, 512 values), or None when unknown."""
    values = _data()["centres"].get(language)
    return None if values is None else np.array(values, dtype=np.float64)


def centred(unit: np.ndarray, language: str, fallback: np.ndarray) -> np.ndarray:
    """``unit`` taken from its language's centre (``fallback`` for a language without one),
    scaled to unit length."""
    c = centre(language)
    v = unit - (fallback if c is None else c)
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


def centred_cosine(a: np.ndarray, lang_a: str, b: np.ndarray, lang_b: str,
                   fallback: np.ndarray) -> float:
    """Cosine of two unit vectors, each taken from its language's centre."""
    return float(centred(a, lang_a, fallback) @ centred(b, lang_b, fallback))
