"""The messages of the story stage and the coder that writes them across shuffles.

Every value that crosses a GroupByKey in :mod:`transforms.stories.stage` is one of the
small typed classes below; a join's consumer tells them apart by their type (see
:func:`by_type`), not by a string tag. They are written by :class:`StoryMessageCoder`:
one byte naming the class, then the fields as a plain tuple through Beam's
deterministic primitive coder (strings, numbers, booleans, ``None``, bytes and tuples of
them). Nothing is pickled, the bytes of equal messages are equal, and the coder is
registered with Beam's coder registry for every class and for the :class:`StoryMessage`
marker that a join of several classes declares as its value type.

The final join of the stage also carries the :class:`~schemas.Article` records; it is
declared as :class:`Decision` and written by :class:`DecisionCoder`, which writes the
article as every other stage of the pipeline does (Beam's fallback encoding of a
record) and the story messages as above.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import operator
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import coder_impl
from apache_beam.coders.coders import FastCoder, FastPrimitivesCoder

from schemas import Article
from transforms.stories.similarity import Sketch, StorySimilarity


class StoryItem(NamedTuple):
    """What matching needs of an article: small enough for keyed state."""

    article_id: str
    micros: int
    content_hash: str
    sketch: Sketch
    seed_story: str | None = None  # story_id of an article already written (re-runs)

    @property
    def order(self) -> tuple[int, str]:
        """Sort key: event time, then id (published_at or fetched_at)."""
        return (self.micros, self.article_id)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_micros(when: dt.datetime) -> int:
    """UTC microseconds since the epoch (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


def make_item(sim: StorySimilarity, article_id: str, title: str, body: str, language: str,
              when: dt.datetime, content_hash: str, seed_story: str | None = None) -> StoryItem:
    """Sketches one article into a :class:`StoryItem`."""
    return StoryItem(article_id, to_micros(when), content_hash,
                     sim.sketch(title or "", body or "", language or "und"), seed_story)


class ItemRef(NamedTuple):
    """What ChooseParent needs of an item: its order (seeds first, then event time, then
    id) and its seed story, without the sketch."""

    new: bool  # False for a seed (an article already written)
    micros: int
    article_id: str
    seed_story: str | None

    @property
    def order(self) -> tuple[bool, int, str]:
        """The item's sort key (:func:`transforms.stories.stage.item_order`)."""
        return (self.new, self.micros, self.article_id)


class Edge(NamedTuple):
    """A candidate parent found for an article under one blocking key."""

    target: str
    target_micros: int
    score: float
    near: float | None  # Jaccard estimate when the pair is a near-identical copy
    stand_out: bool = False  # under the threshold, but may join by standing out


class Peer(NamedTuple):
    """A compared pair seen from its earlier article: the later article and the score
    (for the earlier article's neighbourhood level)."""

    other: str
    score: float
    stand_out: bool  # the later article needs this article's level (Edge.stand_out)


class Level(NamedTuple):
    """An article's neighbourhood level: the mean log-odds of its best compared pairs
    (:func:`transforms.stories.neighbourhood.neighbourhood_level`)."""

    article_id: str
    level: float


class Node(NamedTuple):
    """An article in the story forest during pointer jumping.

    Sent to its own key when done (it answers for its pointer there) and, after the
    rounds, joined by article id with its votes.
    """

    article_id: str
    ptr: str          # current pointer: parent, ancestor, or the story label when done
    done: bool
    level: str        # lead, seed, echo, near, or apart (an echo that refused every story)
    score: float | None
    parent: str | None
    parent_near: bool | None = None


class Ask(Node):
    """A node sent to the key of its pointer to learn that key's pointer (a pointer
    round), or an echo's compared pair asking for the story of the earlier article (a
    vote look-up, ``level`` ``vote``)."""

    __slots__ = ()


class Vote(Node):
    """A looked-up compared pair on its way back to the echo: ``parent`` is the earlier
    article, ``score`` the pair's score and ``ptr`` that article's story."""

    __slots__ = ()


class Pointer(NamedTuple):
    """A key's own pointer, answered to the nodes asking it."""

    ptr: str
    done: bool
    near: bool  # the key's article is a near copy


class Exact(NamedTuple):
    """A decision taken before story matching: the article is not written."""

    level: str          # url or content
    kept: str           # article_id of the article kept in its place
    similarity: float


class StoryMessage(abc.ABC):  # noqa: B024 - a marker: the classes register below
    """Any of the story messages: the value type of a join of several of them."""


class Decision(abc.ABC):  # noqa: B024 - a marker: the classes register below
    """An article or a story message: the value type of the stage's final join."""


_SKETCH_VALUES = operator.attrgetter(*(f.name for f in dataclasses.fields(Sketch)))


def item_values(item: StoryItem) -> tuple:
    """``item`` as plain values (strings, numbers, bytes and tuples of them)."""
    return (item.article_id, item.micros, item.content_hash, _SKETCH_VALUES(item.sketch),
            item.seed_story)


def item_from_values(values: Iterable) -> StoryItem:
    """The :class:`StoryItem` that :func:`item_values` gave ``values`` for."""
    article_id, micros, content_hash, sketch, seed_story = values
    return StoryItem(article_id, micros, content_hash, Sketch(*sketch), seed_story)


# Class → (code, to plain values, from plain values). Codes are part of the encoding:
# never reuse one for another class.
_PLAIN: dict[type, tuple[int, Callable[[Any], Any], Callable[[Any], Any]]] = {
    StoryItem: (1, item_values, item_from_values),
    ItemRef: (2, tuple, ItemRef._make),
    Edge: (3, tuple, Edge._make),
    Node: (4, tuple, Node._make),
    Ask: (5, tuple, Ask._make),
    Vote: (6, tuple, Vote._make),
    Pointer: (7, tuple, Pointer._make),
    Exact: (8, tuple, Exact._make),
    Peer: (9, tuple, Peer._make),
    Level: (10, tuple, Level._make),
}
_ARTICLE = 100


class _MessageCoderImpl(coder_impl.StreamCoderImpl):
    """One byte naming the class, then its fields as a deterministic primitive tuple."""

    def __init__(self, articles: bool):
        self._fields = FastPrimitivesCoder().as_deterministic_coder(
            "story messages").get_impl()
        self._articles = FastPrimitivesCoder().get_impl() if articles else None
        self._encode = {cls: (code, to) for cls, (code, to, _) in _PLAIN.items()}
        self._decode = {code: back for code, _, back in _PLAIN.values()}

    def encode_to_stream(self, value: Any, out: Any, nested: bool) -> None:
        plain = self._encode.get(type(value))
        if plain is not None:
            out.write_byte(plain[0])
            self._fields.encode_to_stream(plain[1](value), out, True)
        elif self._articles is not None and type(value) is Article:
            out.write_byte(_ARTICLE)
            self._articles.encode_to_stream(value, out, True)
        else:
            raise TypeError(f"not a story message: {type(value).__name__}")

    def decode_from_stream(self, in_: Any, nested: bool) -> Any:
        code = in_.read_byte()
        if code == _ARTICLE and self._articles is not None:
            return self._articles.decode_from_stream(in_, True)
        return self._decode[code](self._fields.decode_from_stream(in_, True))


class StoryMessageCoder(FastCoder):
    """Deterministic coder of every story message class (see the module docstring)."""

    def _create_impl(self) -> coder_impl.CoderImpl:
        return _MessageCoderImpl(articles=False)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> Any:
        return StoryMessage

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class DecisionCoder(StoryMessageCoder):
    """:class:`StoryMessageCoder` that also writes :class:`~schemas.Article` records (as
    the rest of the pipeline does, which is not deterministic: a join value only)."""

    def _create_impl(self) -> coder_impl.CoderImpl:
        return _MessageCoderImpl(articles=True)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> Any:
        return Decision


def by_type(messages: Iterable[Any], *types: type) -> dict[type, list]:
    """One key's grouped messages as ``{class: [messages]}``, for each of ``types``.

    What a CoGroupByKey gives, from one GroupByKey of messages of several classes (a
    CoGroupByKey adds a tagging step per input and one to collect). Classes are matched
    exactly: an :class:`Ask` is not a :class:`Node` here.
    """
    groups: dict[type, list] = {t: [] for t in types}
    for message in messages:
        groups[type(message)].append(message)
    return groups


for _cls in _PLAIN:
    StoryMessage.register(_cls)
    Decision.register(_cls)
    beam.coders.registry.register_coder(_cls, StoryMessageCoder)
Decision.register(Article)
beam.coders.registry.register_coder(StoryMessage, StoryMessageCoder)
beam.coders.registry.register_coder(Decision, DecisionCoder)
