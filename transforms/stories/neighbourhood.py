"""The stand-out step of the story stage: neighbourhood levels and pairs that stand out.

A pair of two full articles in two languages may score under the threshold only because
the similarity scores a pair of two languages lower than the same pair in one. Such a pair
still joins when it stands out of both articles' neighbourhoods: every compared pair is
seen from both its articles (:func:`peer_messages`, one GroupByKey in
:class:`~transforms.stories.stage.AssignStories`), each article gets a level from its best
pairs (:func:`levelled`, :func:`neighbourhood_level`), and ChooseParent asks
:func:`stands_out` of the pairs :func:`~transforms.stories.stage.compare` marked. This is
local scaling, as cross-lingual word retrieval corrects for crowded regions of an
embedding space. The rule and its constants are described, with their figures, in
docs/story-rounds.md ("Seventh round").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from transforms.stories.messages import Edge, Level, Peer, StoryMessage, by_type
from transforms.stories.similarity import _logit

APART_FLOOR = 0.15
"""Compared pairs scoring at least this but under the threshold travel to the vote as
evidence against the story of the earlier article
(:func:`~transforms.stories.stage.vote_story`), and make an article's neighbourhood level;
pairs under it share too little to say anything about a story and are not sent."""
STAND_OUT_FLOOR = 0.40
"""A pair of two full articles in two languages scoring at least this but under the
threshold joins when it stands out of both articles' neighbourhoods (:func:`stands_out`).
The default of :class:`~transforms.stories.stage.AssignStories` with a similarity that
reads the encoder (it was designed on the multilingual model's scores; on the design weeks
it cost the lexical model precision)."""
STAND_OUT_TOP = 5
"""How many of an article's best compared pairs make its neighbourhood level
(:func:`neighbourhood_level`)."""
STAND_OUT_PAIRS = 3
"""Compared pairs (scoring at least APART_FLOOR) an article needs for a neighbourhood
level: with fewer, its level would be mostly padding and none of its pairs stands out."""
STAND_OUT_WEIGHT = 0.5
"""Share of the two articles' mean neighbourhood level a standing-out pair's log-odds
must reach (:func:`stands_out`)."""


def neighbourhood_level(scores: Iterable[float], top: int = STAND_OUT_TOP,
                        floor: float = APART_FLOOR) -> float:
    """An article's neighbourhood level: the mean log-odds of its ``top`` best compared
    pairs (pairs it lacks, or scoring under ``floor``, count as ``floor``).

    A text whose best pairs all score low sits in a sparse neighbourhood: a report in one
    language among reports in others, which the similarity scores lower than it would
    score the same pair in one language. A text among close reports of the same kind (the
    matches of one tournament) sits in a dense one.
    """
    best = sorted((max(s, floor) for s in scores), reverse=True)[:top]
    best += [floor] * (top - len(best))
    return sum(_logit(min(s, 1.0 - 1e-6)) for s in best) / top


def stands_out(score: float, level_a: float, level_b: float,
               weight: float = STAND_OUT_WEIGHT) -> bool:
    """Whether a pair under the threshold stands out of both articles' neighbourhoods:
    its log-odds reach ``weight`` times the mean of the two levels
    (:func:`neighbourhood_level`).

    Local scaling, as cross-lingual retrieval corrects for crowded regions of an
    embedding space: the same score means more between two texts whose other pairs all
    score lower than between two texts with many close neighbours. Only pairs marked
    ``stand_out`` by :func:`compare` are asked (two languages, two full articles, at
    least :data:`STAND_OUT_FLOOR`).
    """
    return _logit(score) >= weight * (level_a + level_b) / 2.0


def peer_messages(article_edge: tuple[str, Edge]) -> Iterator[tuple[str, Any]]:
    """A candidate edge → itself, at its article, and a :class:`Peer` at its earlier
    article, so that both learn the pair's score for their neighbourhood levels."""
    article_id, edge = article_edge
    yield article_id, edge
    yield edge.target, Peer(article_id, edge.score, edge.stand_out)


def levelled(element: tuple[str, Iterable[StoryMessage]]) -> Iterator[tuple[str, Any]]:
    """At one article: its edges, passed on, and its :class:`Level`, for itself and for
    every later article whose standing-out pair with it must be weighed."""
    article_id, messages = element
    groups = by_type(messages, Edge, Peer)
    best: dict[str, float] = {}
    for other, score in [(e.target, e.score) for e in groups[Edge] if e.near is None] + [
            (p.other, p.score) for p in groups[Peer]]:
        best[other] = max(score, best.get(other, 0.0))
    for edge in groups[Edge]:
        yield article_id, edge
    if sum(s >= APART_FLOOR for s in best.values()) < STAND_OUT_PAIRS:
        return
    level = Level(article_id, round(neighbourhood_level(best.values()), 4))
    yield article_id, level
    for later in sorted({p.other for p in groups[Peer] if p.stand_out}):
        yield later, level
