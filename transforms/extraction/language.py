"""Language stage: identify each article's language with langdetect.

langdetect is randomised; without a fixed seed the same short text can be labelled
differently in two processes, so the seed is set once per worker. Detection runs on the
title plus the first 3,000 characters of the body (longer text costs time and does not
change the answer for news). When the text is too short or detection is unsure
(probability below 0.70), the feed's declared language is used instead, then ``und``.

``--languages en,uk`` keeps only articles in those languages: :class:`FilterLanguagesFn`
turns every other article into one error record (``level=entry``,
``stage=filter_language``, ``reason=language_filtered``), so the accounting still closes
and the errors table says what was left out. ``und`` in the list keeps articles whose
language could not be determined.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from schemas import Article
from transforms.feeds.parse import language_code
from transforms.util import NAMESPACE, error_record

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


_CODE = re.compile(r"^[a-z]{2,3}$")


def parse_languages(value: str) -> frozenset[str]:
    """``"en, uk"`` → ``{"en", "uk"}``; raises ValueError naming a code that is not
    ISO 639 (two or three lowercase letters, or ``und``)."""
    codes = [c.strip().lower() for c in value.split(",") if c.strip()]
    if not codes:
        raise ValueError("--languages needs at least one ISO 639 code, e.g. en,uk")
    bad = [c for c in codes if not _CODE.match(c)]
    if bad:
        raise ValueError(f"--languages: not ISO 639 codes: {', '.join(map(repr, bad))}")
    return frozenset(codes)


def language_refusal(article: Article, languages: Iterable[str]) -> str | None:
    """Why ``article`` is left out by the language filter, or None when it is kept."""
    keep = sorted(languages)
    if article.language in keep:
        return None
    return (f"article language {article.language!r} is not among --languages "
            f"{','.join(keep)}")


class FilterLanguagesFn(beam.DoFn):
    """Keeps articles in ``languages``; every other one becomes an error record (tagged
    ``errors``, reason ``language_filtered``) stamped with the article's fetch time."""

    def __init__(self, languages: Iterable[str]):
        self._languages = frozenset(languages)
        self.filtered = Metrics.counter(NAMESPACE, "articles_language_filtered")

    def process(self, article: Article) -> Iterator[Any]:
        why = language_refusal(article, self._languages)
        if why is None:
            yield article
            return
        self.filtered.inc()
        yield pvalue.TaggedOutput("errors", error_record(
            article.url, article.feed_url, "entry", "filter_language", "language_filtered",
            why, None, 1, article.fetched_at, article.source, article.language))
