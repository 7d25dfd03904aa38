"""Language stage: identify each article's language with langdetect.

langdetect is randomised; without a fixed seed the same short text can be labelled
differently in two processes, so the seed is set once per worker. Detection runs on the
title plus the first 3,000 characters of the body (longer text costs time and does not
change the answer for news). When the text is too short or detection is unsure
(probability below 0.70), the feed's declared language is used instead, then ``und``.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import Article
from transforms.feeds.parse import language_code
from transforms.util import NAMESPACE

MAX_CHARS = 3000
MIN_CHARS = 20
MIN_PROBABILITY = 0.70


def _factory():
    from langdetect import DetectorFactory
    from langdetect.detector_factory import init_factory

    DetectorFactory.seed = 0
    init_factory()
    from langdetect import detector_factory

    return detector_factory._factory  # noqa: SLF001 - the loaded profiles


def detect_language(text: str, hint: str | None = None) -> tuple[str, float | None]:
    """Returns (ISO 639-1 code, probability); falls back to ``hint`` or ``und``."""
    sample = text[:MAX_CHARS]
    fallback = (language_code(hint) or "und", None)
    if sum(ch.isalpha() for ch in sample) < MIN_CHARS:
        return fallback
    from langdetect.lang_detect_exception import LangDetectException

    factory = _factory()
    try:
        detector = factory.create()
        detector.append(sample)
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError, ValueError, ZeroDivisionError):
        return fallback
    lang = best.lang.split("-")[0]
    if best.prob < MIN_PROBABILITY and hint:
        return fallback
    return lang, round(float(best.prob), 4)


class DetectLanguageFn(beam.DoFn):
    """Sets ``language`` and ``language_confidence`` on each article."""

    def __init__(self):
        self.undetermined = Metrics.counter(NAMESPACE, "language_undetermined")

    def setup(self) -> None:
        _factory()  # load the profiles once per worker, not on the first element

    def process(self, article: Article):
        # Until this stage ``language`` holds the feed's declared language (or ``und``).
        hint = None if article.language == "und" else article.language
        lang, prob = detect_language(f"{article.title}\n{article.body}", hint)
        if lang == "und":
            self.undetermined.inc()
        yield dataclasses.replace(article, language=lang, language_confidence=prob)
