"""Topic stage: one IPTC Media Topic per article, also the ``topic`` partition value.

The topic comes from the first of these that decides:

1. the feed's configured ``topic`` (``topic_source = feed``);
2. the feed's or page's category strings, through a user-editable mapping file
   (``transforms/data/categories.yaml``, extendable with ``--category-map``)
   (``topic_source = category``);
3. the built-in classifier (``transforms/topics/classify.py``: multilingual lexicons, optionally
   blended with a head on the packaged sentence encoder; offline),
   when its confidence reaches ``--topic-threshold`` (``topic_source = classifier``);
4. otherwise ``unclassified`` (``topic_source = none``).

Topic slugs come from a fixed table of the 17 top-level IPTC Media Topics, so the
partition directory name is always one of 18 known strings: nothing a feed says can
reach the file system.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import apache_beam as beam
import yaml
from apache_beam.metrics import Metrics

from schemas import Article
from transforms.topics.classify import DEFAULT_THRESHOLD, USE_ENCODER, TopicClassifier
from transforms.topics.taxonomy import MEDIA_TOPICS, UNCLASSIFIED
from transforms.util import NAMESPACE


def load_category_map(extra: str | None = None) -> dict[str, str | None]:
    """Loads the bundled category mapping, merged with ``extra`` (a YAML file) if given."""
    text = resources.files("transforms").joinpath("data/categories.yaml").read_text("utf-8")
    mapping = _validate(yaml.safe_load(text) or {}, "built-in category map")
    if extra:
        mapping.update(_validate(yaml.safe_load(Path(extra).read_text("utf-8")) or {}, extra))
    return mapping


def _validate(raw: object, where: str) -> dict[str, str | None]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of category → topic slug")
    out: dict[str, str | None] = {}
    for key, value in raw.items():
        if value is not None and value not in MEDIA_TOPICS:
            raise ValueError(f"{where}: {key!r} maps to unknown topic {value!r}; "
                             f"use one of {sorted(MEDIA_TOPICS)}")
        out[str(key).strip().casefold()] = value
    return out


def topic_from_categories(categories: Iterable[str],
                          mapping: Mapping[str, str | None]) -> str | None:
    """The first category (in feed order) that the mapping sends to a topic."""
    for category in categories:
        slug = mapping.get(category.strip().casefold())
        if slug:
            return slug
    return None


def assign_topic(article: Article, mapping: Mapping[str, str | None],
                 classifier: TopicClassifier | None = None) -> Article:
    """Applies the precedence rules and sets ``topic``, ``topic_code``, ``topic_source``.

    Feed topic, then category mapping, then ``classifier`` (skipped when None), then
    ``unclassified``.
    """
    slug, source = None, "none"
    if article.topic_source == "feed" and article.topic in MEDIA_TOPICS:
        slug, source = article.topic, "feed"
    if slug is None:
        slug = topic_from_categories(article.categories, mapping)
        source = "category" if slug else "none"
    if slug is None and classifier is not None:
        slug = classifier.classify(article.title, article.body, article.language).topic
        source = "classifier" if slug else "none"
    if slug is None:
        return dataclasses.replace(article, topic=UNCLASSIFIED, topic_code=None,
                                   topic_source="none")
    return dataclasses.replace(article, topic=slug, topic_code=MEDIA_TOPICS[slug][0],
                               topic_source=source)


class AssignTopicFn(beam.DoFn):
    """Sets the topic of each article; counts articles per topic source.

    The classifier is created in ``setup`` (once per worker, never when the pipeline is
    built or pickled); each language's lexicon loads on its first article. Pass
    ``use_classifier=False`` to stop at the category mapping, ``use_encoder=True`` to blend
    the sentence-encoder head into the classifier (see ``transforms/topics/classify.py``).
    """

    def __init__(self, category_map: Mapping[str, str | None],
                 threshold: float = DEFAULT_THRESHOLD, use_classifier: bool = True,
                 use_encoder: bool = USE_ENCODER):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"topic threshold must be between 0 and 1, got {threshold}")
        self._map = dict(category_map)
        self._threshold = threshold
        self._use_classifier = use_classifier
        self._use_encoder = use_encoder
        self._classifier: TopicClassifier | None = None
        self._encoder: object = None
        self._counters = {s: Metrics.counter(NAMESPACE, f"topic_from_{s}")
                          for s in ("feed", "category", "classifier", "none")}

    def setup(self) -> None:
        if self._use_classifier:
            self._classifier = TopicClassifier(threshold=self._threshold,
                                               use_encoder=self._use_encoder)
        if self._use_classifier and self._use_encoder:
            # The story stage's encoder: one copy per worker process, held from here.
            from transforms.stories.similarity import MultilingualSimilarity, load_models

            self._encoder = load_models(MultilingualSimilarity())

    def process(self, article: Article):
        out = assign_topic(article, self._map, self._classifier)
        self._counters[out.topic_source].inc()
        yield out
