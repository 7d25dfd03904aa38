"""Story stage: exact copies, near-identical copies and echoes of one story across outlets.

Size: about 1,230 lines, holding the keyed steps, the pointer rounds, the vote and the
transform that wires them. The messages they exchange are typed in
:mod:`transforms.stories.messages`, the stand-out step's levels live in
:mod:`transforms.stories.neighbourhood`, the re-run seeds in :mod:`transforms.stories.seeds`
and the window frequency table in :mod:`transforms.stories.frequency`. What is left is one
design, each shuffle's producer and consumer side by side (the messages one step emits are
read by the next, under one set of step labels that a running pipeline's update depends
on); the decisions digest of ``bench/bench_dedup_cost.py`` is how a further split, of the
pointer rounds and the vote, would be checked to change nothing.

:class:`AssignStories` takes articles (after language and topic) and returns the
articles with ``story_id``, ``is_story_lead`` and ``story_similarity`` set, plus a
:class:`~schemas.DuplicateRecord` for every article it does not write:

* ``content``: same normalised body hash as an earlier article;
* ``near``: a near-identical copy (wire copy, re-post with other boilerplate, light edits),
  by MinHash over word bigrams (:func:`transforms.stories.similarity.near_duplicate`);
* ``echo`` (only with ``drop_echoes``): the same story told in other words, possibly in
  another language; without ``drop_echoes`` echoes are written and share the ``story_id``
  of the story's first article;
* ``url``: the article is already in the output folder (a re-run over the same inputs).

How it scales (every step is keyed; there is no global index):

1. each article is sketched once (:mod:`transforms.stories.similarity`): a few hundred bytes;
2. ``ByContent``: grouped by body hash, first wins (the pattern of :mod:`transforms.stories.exact`);
3. ``CompareWithinKey``: each sketch is sent under its blocking keys (its rarest names
   and words, at most NUM_KEYS, and with the encoder the sign bands of its vector); a
   DoFn per key compares each article with the earlier ones
   of that key within the time window (at most ``max_per_key`` most recent, so a common
   key cannot turn quadratic) and emits candidate parents (a pair published more than a
   day apart scores lower for every further day: :func:`later_by`). Under a trigger that can fire
   a key more than once the DoFns keep keyed state (expiring after the window); with the
   default trigger each key fires once and plain DoFns do the same work without state,
   which is far cheaper in the Python SDK harness (:func:`fires_once`);
4. ``Neighbourhoods`` and ``ChooseParent``: every compared pair is seen from both its
   articles (one GroupByKey), which gives each article its neighbourhood level, the mean
   log-odds of its best pairs (:mod:`transforms.stories.neighbourhood`); a pair of two languages
   under the threshold that stands out of both levels counts as a match
   (:func:`stands_out`). Then, per article, the best earlier match (a near copy first,
   else the highest score at or above the threshold, ties to the earlier article);
5. ``ResolveStories``: parent pointers form a forest whose roots are story leads; a few
   rounds of pointer jumping (each a GroupByKey) give every article its root,
   ``2**rounds`` levels deep;
6. ``VoteStories``: each echo looks up the stories of all the earlier articles it was
   compared with (one more join keyed by those articles; pairs scoring from
   ``APART_FLOOR`` up to the threshold come along as evidence against) and joins the
   story that holds most of its matches among the stories it agrees with: its lead
   matches it, or most of the story's members it was compared with do. With no such
   story it opens its own. So one stray best match, or a chain of pairwise links, does
   not carry an article, and all that joined it, into the wrong story. An echo that
   found no story open votes again in the next round (:data:`VOTE_ROUNDS`), when what it
   matched may lead a story of its own;
7. ``AssembleStories``: a join by ``article_id`` (with the votes of the last vote round)
   sets the fields or emits the record.

Everything is sorted by ``(published_at or fetched_at, article_id)`` before any decision,
so the same input gives the same story ids in whatever order the runner delivers it.

What it costs: in the Python SDK harness every element that crosses a GroupByKey is
encoded and decoded several times, and every step costs something per bundle. So items,
edges, nodes, pointers and votes cross shuffles as the small typed messages of
:mod:`transforms.stories.messages`, written by a registered deterministic coder that
pickles nothing; joins are one GroupByKey of messages of several classes, told apart by
their class (:func:`~transforms.stories.messages.by_type`), rather than a CoGroupByKey
(which adds a tagging step per input and a collecting one); and the steps on either side
of a shuffle do all they can in one DoFn.

Continuous pipeline (``across_windows``): the articles come in fixed windows, one per poll
interval, and an article must still find its original when that came in an earlier
window. Beam scopes keyed state to a key *and* a window, so the keyed steps (by id, by
content, per blocking key, and each pointer-jumping round) group within the window as in
batch and then run their stateful twins in the global window (:class:`WithMemory`), where
state lives until its expiry timer fires: the story window after the article's event
time (watermark time). Their outputs go back into the window they came from, so the joins
(``ChooseParent``, ``AssembleStories``) still see one complete group per window and every
article is decided exactly once. Groups reach the stateful steps in window order on the
direct runner; a runner that delivers a later window's group for a key before an earlier
one's can miss that match (never lose or double an article).

Re-runs: with ``existing=DIR`` the articles already published under ``DIR/articles/``
(date partitions within the window of this batch) are read back and take part as earlier
articles ("seeds") with the story ids they were written with; a new article whose id is
already there is reported as a ``url`` duplicate of itself, so re-running a batch adds
no rows to ``articles/``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.coders.stream import InputStream, OutputStream
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas import SCHEMA_VERSION, Article, DuplicateRecord
from transforms.stories.frequency import WeighByWindowFrequency
from transforms.stories.messages import (
    Ask,
    Decision,
    Edge,
    Exact,
    ItemRef,
    Level,
    Node,
    Pointer,
    StoryItem,
    StoryMessage,
    StoryMessageCoder,
    Vote,
    by_type,
    make_item,
    to_micros,
)
from transforms.stories.neighbourhood import (
    APART_FLOOR,
    STAND_OUT_FLOOR,
    levelled,
    peer_messages,
    stands_out,
)
from transforms.stories.seeds import ListSeedFilesFn, ReadSeedsFn, event_bounds
from transforms.stories.similarity import (
    SHORT_WORDS,
    SKETCH_BYTES,
    STORE_KEYS,
    LexicalSimilarity,
    MultilingualSimilarity,
    Sketch,
    StorySimilarity,
    _logit,
    _sigmoid,
    load_models,
    near_duplicate,
    probe_keys,
)
from transforms.util import NAMESPACE, fires_once

_LOG = logging.getLogger(__name__)
VECTOR_PROBES = True
"""Whether an article also looks for earlier ones in the neighbouring bucket of each band
of its encoder vector (:func:`~transforms.stories.similarity.probe_keys`)."""
VECTOR_KEY = "e"
"""Prefix of the blocking keys taken from the encoder vector (lexical keys start w: or n:)."""
DEFAULT_WINDOW = dt.timedelta(hours=72)
MAX_PER_KEY = 64
RESOLVE_ROUNDS = 6
VOTE_ROUNDS = 2
"""Rounds of :class:`VoteStories` after the pointers are resolved (0: single best match).
The second lets an article that refused every story in the first join the story that one
of its matches opened in the same round (see :func:`vote_story`)."""
APART = "apart"
"""Node level of an echo that refused every story it was offered: written as a lead, and
free to join a story in a later vote round."""
GAP_FREE_HOURS = 24.0
"""Pairs published at most this far apart are scored as the similarity says."""
GAP_PENALTY = 1.0
"""Log-odds taken from a pair's score per day it is published beyond GAP_FREE_HOURS apart
(:func:`later_by`)."""
AUTO = "auto"
"""``AssignStories(stand_out=AUTO)``: :data:`STAND_OUT_FLOOR` with a similarity that reads
the encoder (:class:`~transforms.stories.similarity.MultilingualSimilarity` and its
variants), off with the others."""


# ------------------------------------------------------------------ pure helpers

def event_time(article: Article) -> dt.datetime:
    """The time stories are ordered by: published_at, else fetched_at."""
    return article.published_at or article.fetched_at


def item_order(item: StoryItem) -> tuple:
    """Seeds (already written) come first, then event time, then id."""
    return (item.seed_story is None, item.micros, item.article_id)


def item_ref(item: StoryItem) -> ItemRef:
    """What ChooseParent needs of ``item``: its :func:`item_order` and seed story."""
    return ItemRef(item.seed_story is None, item.micros, item.article_id, item.seed_story)


def later_by(score: float, micros: int) -> float:
    """``score`` of a pair published ``micros`` apart, lowered when that is over a day.

    A retelling of a story mostly comes out within a day of it; a report of the same
    places and names two days later is more often the next event of the kind (the next
    night's strike on the same city, the next round of a tournament). Each day beyond
    :data:`GAP_FREE_HOURS` takes :data:`GAP_PENALTY` from the pair's log-odds, so an echo
    two days on needs clearly stronger evidence and one three days on much stronger.
    """
    hours = micros / 3.6e9
    if hours <= GAP_FREE_HOURS or not 0.0 < score < 1.0:
        return score
    return _sigmoid(_logit(score) - GAP_PENALTY * (hours - GAP_FREE_HOURS) / 24.0)


def compare(sim: StorySimilarity, item: StoryItem, earlier: StoryItem,
            threshold: float, apart_below: float = 0.0,
            stand_out_from: float | None = None) -> Edge | None:
    """An edge from ``item`` to ``earlier`` when it is a near copy or scores ≥ threshold.

    A ``threshold`` below the stage's decision point (``apart_below``) also yields the
    pairs that were compared and found apart (evidence against a story in
    :func:`vote_story`), unless either article is a headline only. Such a pair of two
    full articles in two languages scoring at least ``stand_out_from`` is marked
    ``stand_out``: it may still join if it stands out of both articles' neighbourhoods
    (:func:`stands_out`).
    """
    near = near_duplicate(item.sketch, earlier.sketch)
    score = sim.score(item.sketch, earlier.sketch)
    if near is None:  # a copy is a copy whenever it came
        score = later_by(score, abs(item.micros - earlier.micros))
    if near is None and score < threshold:
        return None
    if near is None and score < apart_below and min(item.sketch.words,
                                                     earlier.sketch.words) < SHORT_WORDS:
        # A headline scored against another says too little to count against a story.
        return None
    a, b = item.sketch, earlier.sketch
    stand_out = (near is None and stand_out_from is not None
                 and stand_out_from <= score < apart_below
                 and a.language != b.language and "und" not in (a.language, b.language)
                 and min(a.words, b.words) >= SHORT_WORDS)
    return Edge(earlier.article_id, earlier.micros, round(score, 4), near, stand_out)


def choose_parent(edges: Iterable[Edge]) -> Edge | None:
    """Picks the parent among candidate edges, deterministically.

    A near-identical copy points to the earliest article it copies (the likely original);
    otherwise the article joins the story of its best-scoring earlier match.
    """
    ordered = sorted(edges, key=lambda e: (e.target, e.score, -1.0 if e.near is None else e.near))
    unique = list({e.target: e for e in ordered}.values())
    near = [e for e in unique if e.near is not None]
    if near:
        return min(near, key=lambda e: (e.target_micros, -e.near, e.target))
    return min(unique, key=lambda e: (-e.score, e.target_micros, e.target), default=None)


def vote_story(node: Node, votes: Iterable[Node], threshold: float | None = None) -> Node:
    """Moves an echo into the story it agrees with, deterministically.

    ``votes`` are the article's compared pairs after a look-up: ``parent`` is the earlier
    article compared, ``score`` the pair's score and ``ptr`` that article's story. With a
    ``threshold``, a pair scoring below it is a member of that story the article was
    compared with and found apart from: evidence against the story. A story is open to the
    article only when its lead agrees (scores at or above ``threshold``) or more of its
    compared members agree than disagree, so that a chain of pairwise links, or one
    stray match with a member, cannot carry an article into a story whose other members
    it does not resemble; with no story open, the echo opens a story of its own (a
    lead). Among open stories the one with the most agreeing members wins, then the best
    score, then the article's own story, then the smaller label; ``parent`` and ``score``
    become the best match in it. Without ``threshold`` every vote agrees. Leads (no
    match), seeds (already written) and near copies (they follow the article they copy)
    keep their node.

    An echo that no story is open to opens its own as an ``apart`` node: written as a
    lead, but it votes again in the next round. Its matches may have been in a story it
    refused only because they had not yet left it themselves (two retellings that both
    refuse the story of their first match): a round later they lead stories of their own,
    and the apart article can join the one it agrees with instead of staying alone.
    """
    if node.level not in ("echo", APART):
        return node
    stories: dict[str, dict[str, Node]] = {}
    for v in votes:
        members = stories.setdefault(v.ptr, {})
        if v.parent not in members or v.score > members[v.parent].score:
            members[v.parent] = v
    cut = float("-inf") if threshold is None else threshold
    open_: dict[str, list[Node]] = {}
    for label, members in stories.items():
        agree = [m for m in members.values() if m.score >= cut]
        lead = members.get(label)
        if agree and ((lead is not None and lead.score >= cut)
                      or 2 * len(agree) > len(members)):
            open_[label] = agree
    if not stories:
        return node
    if not open_:
        return Node(node.article_id, node.article_id, True, APART, None, None)

    def rank(label: str) -> tuple:
        members = open_[label]
        return (-len(members), -max(m.score for m in members), label != node.ptr, label)

    label = min(open_, key=rank)
    top = min(open_[label], key=lambda v: (-v.score, v.parent))
    return node._replace(ptr=label, done=top.done, level="echo", score=top.score,
                         parent=top.parent)


def indexed_under(item: StoryItem, key: str | None) -> bool:
    """Whether ``item`` is kept as an earlier article under blocking key ``key``.

    An article looks for earlier ones under all its keys but is kept only under its
    strongest :data:`~transforms.stories.similarity.STORE_KEYS`: state holds fewer copies of
    each sketch, and fewer weak links chain unrelated stories. A headline-only article
    (fewer than :data:`~transforms.stories.similarity.SHORT_WORDS` words) is kept under all its
    keys: its few words are all a later headline can find it by, and its sketch is about
    half an article's, so state holds about as many bytes for it. Keys of the encoder
    vector (:func:`~transforms.stories.similarity.vector_keys`) keep every article under
    its own bands: few articles share one, and they are what finds a retelling that shares
    no word; the buckets it only probes
    (:func:`~transforms.stories.similarity.probe_keys`) do not keep it. ``None``: every
    key.
    """
    if key is None:
        return True
    if key.startswith(VECTOR_KEY):
        return key in item.sketch.keys  # its own bands, not the buckets it probes
    short = item.sketch.words < SHORT_WORDS
    return key in (item.sketch.keys if short else item.sketch.keys[:STORE_KEYS])


def kept_in_state(key: str) -> bool:
    """Whether a key's items outlive the firing that brought them (keyed state).

    Keys of the encoder vector are not: every article is kept under all of its bands,
    which would hold several more copies of each sketch in state and overrun its budget
    per article. Under a trigger that fires a key again (the continuous pipeline) they
    therefore find retellings within one firing (one poll window) only; lexical keys
    reach back the whole story window.
    """
    return not key.startswith(VECTOR_KEY)


def matches_in_group(sim: StorySimilarity, earlier: list[StoryItem], items: list[StoryItem],
                     threshold: float, window_micros: int,
                     max_per_key: int, key: str | None = None,
                     apart_below: float = 0.0,
                     stand_out_from: float | None = None) -> Iterator[tuple[str, Edge]]:
    """Compares each new item with the earlier ones of a key (state + this group).

    ``earlier`` and ``items`` are sorted by :func:`item_order`'s time part; each item is
    compared with at most ``max_per_key`` most recent earlier items within the window
    (the items of this group count as earlier only where :func:`indexed_under` ``key``).
    """
    pool = list(earlier)
    for item in items:
        if item.seed_story is None:
            recent = [e for e in pool if e.order < item.order
                      and item.micros - e.micros <= window_micros]
            recent = recent[max(0, len(recent) - max_per_key):] if max_per_key > 0 else []
            for e in recent:
                edge = compare(sim, item, e, threshold, apart_below, stand_out_from)
                if edge is not None:
                    yield item.article_id, edge
        if indexed_under(item, key):
            pool.append(item)


def decide(article: Article, node: Node | None, root: str | None,
           drop_echoes: bool) -> tuple[str, Any]:
    """Final decision for a kept-by-content article: ('article', Article) or a duplicate.

    Returns ``('article', article)`` or ``('duplicate', Exact(level, duplicate_of,
    similarity))``.
    """
    if node is None or node.level in ("lead", "seed", APART) or node.parent is None:
        return "article", dataclasses.replace(article, story_id=article.article_id,
                                              is_story_lead=True, story_similarity=None)
    story = root or node.parent
    if node.level == "near":
        kept = story if node.parent_near else node.parent
        return "duplicate", Exact("near", kept, float(node.score or 0.0))
    if drop_echoes:
        return "duplicate", Exact("echo", story, float(node.score or 0.0))
    return "article", dataclasses.replace(article, story_id=story, is_story_lead=False,
                                          story_similarity=node.score)


def duplicate_of(article: Article, kept_id: str, level: str, similarity: float,
                 detected_at: dt.datetime) -> DuplicateRecord:
    """The lineage record of an article that is not written."""
    return DuplicateRecord(
        url=article.url, feed_url=article.feed_url, article_id=article.article_id,
        duplicate_of=kept_id, level=level, similarity=float(similarity),
        title=article.title[:1000], detected_at=detected_at,
        date=detected_at.strftime("%Y-%m-%d"), schema_version=SCHEMA_VERSION,
        source=article.source or None, language=article.language or None)


# ------------------------------------------------------------------------- DoFns

class SketchArticleFn(beam.DoFn):
    """Article → ``(article_id, item)``: its :class:`StoryItem` (the similarity's sketch
    plus ordering fields), keyed for the grouping by id."""

    def __init__(self, similarity: StorySimilarity):
        self._sim = similarity
        self._models: object = None
        self.sketch_bytes = Metrics.distribution(NAMESPACE, "story_sketch_bytes")

    def setup(self) -> None:
        # The encoder loads here, once per worker process, not where the pipeline is built.
        self._models = load_models(self._sim)

    def process(self, article: Article) -> Iterator[tuple[str, StoryItem]]:
        item = make_item(self._sim, article.article_id, article.title, article.body,
                         article.language, event_time(article), article.content_hash)
        self.sketch_bytes.update(item.sketch.nbytes())
        yield item.article_id, item


def keep_first(group: Iterable[StoryItem], kept: str | None,
               level: str) -> tuple[str | None, list[Any]]:
    """First wins within one key's group: returns the winner and what to emit.

    Items already written (seeds) always pass and win over new ones; a new item that
    loses becomes ``TaggedOutput('dropped', (article_id, Exact(level, kept_id, 1.0)))``.
    ``kept`` is the winner of an earlier firing of the same key, if any.
    """
    out: list[Any] = []
    for item in sorted(group, key=item_order):
        if item.seed_story is not None:
            out.append(item)
            kept = kept or item.article_id
        elif kept is None:
            kept = item.article_id
            out.append(item)
        else:
            out.append(beam.pvalue.TaggedOutput(
                "dropped", (item.article_id, Exact(level, kept, 1.0))))
    return kept, out


class KeepFirstItemInGroupFn(beam.DoFn):
    """On grouped items of one key, one firing per key: the first is kept (see
    :func:`keep_first`)."""

    def __init__(self, level: str):
        self._level = level
        self.dropped = Metrics.counter(NAMESPACE, f"duplicates_{level}")

    def process(self, element: tuple[str, Iterable[StoryItem]]) -> Iterator[Any]:
        _, out = keep_first(element[1], None, self._level)
        self.dropped.inc(sum(isinstance(o, beam.pvalue.TaggedOutput) for o in out))
        yield from out


class KeepFirstItemFn(beam.DoFn):
    """Stateful version of :class:`KeepFirstItemInGroupFn` for triggers that fire repeatedly.

    The winner of a key is kept in state until the window has passed.
    """

    WINNER = ReadModifyWriteStateSpec("winner", StrUtf8Coder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, level: str, window: dt.timedelta):
        self._level = level
        self._window = Duration(seconds=window.total_seconds())
        self.dropped = Metrics.counter(NAMESPACE, f"duplicates_{level}")

    def process(self, element: tuple[str, Iterable[StoryItem]], window=beam.DoFn.WindowParam,
                winner=beam.DoFn.StateParam(WINNER),
                expire=beam.DoFn.TimerParam(EXPIRE)) -> Iterator[Any]:
        group = list(element[1])
        kept, out = keep_first(group, winner.read(), self._level)
        self.dropped.inc(sum(isinstance(o, beam.pvalue.TaggedOutput) for o in out))
        yield from out
        if kept is not None:
            winner.write(kept)
            last = max(i.micros for i in group)
            expire.set(min(Timestamp(micros=last) + self._window, window.max_timestamp()))

    @on_timer(EXPIRE)
    def on_expire(self, winner=beam.DoFn.StateParam(WINNER)) -> Iterator[Any]:
        winner.clear()
        return iter(())


class CompareInGroupFn(beam.DoFn):
    """On the grouped items of one blocking key, one firing per key: candidate parents.

    Each article is compared with the earlier ones of the group (see
    :func:`matches_in_group`); nothing is kept afterwards.
    """

    def __init__(self, similarity: StorySimilarity, threshold: float, window: dt.timedelta,
                 max_per_key: int = MAX_PER_KEY, apart_below: float = 0.0,
                 stand_out_from: float | None = None):
        self._sim = similarity
        self._threshold = threshold
        self._apart_below = apart_below
        self._stand_out_from = stand_out_from
        self._window_micros = int(window.total_seconds() * 1_000_000)
        self._max = max_per_key
        self.compared = Metrics.counter(NAMESPACE, "story_pairs_compared")
        self.group_size = Metrics.distribution(NAMESPACE, "story_key_group_size")

    def process(self, element: tuple[str, Iterable[StoryItem]]
                ) -> Iterator[tuple[str, Edge]]:
        values = list(element[1])
        self.group_size.update(len(values))
        if len(values) < 2:  # nothing earlier to compare with
            return
        items = sorted(values, key=lambda i: i.order)
        n = 0
        for article_id, edge in matches_in_group(self._sim, [], items, self._threshold,
                                                 self._window_micros, self._max, element[0],
                                                 self._apart_below, self._stand_out_from):
            n += 1
            yield article_id, edge
        self.compared.inc(n)


class StoryPoolCoder(beam.coders.Coder):
    """Compact, deterministic bytes for a key's list of earlier items in keyed state.

    Pickling a list of :class:`StoryItem` spends a few hundred bytes per item on class and
    field names; this coder writes each item as its fields in a fixed order (Beam's varints
    and length-prefixed bytes; blocking keys left out: state does not need them), which
    keeps the state of a retained article under the story stage's budget.
    """

    def encode(self, items: list[StoryItem]) -> bytes:
        out = OutputStream()
        out.write_var_int64(len(items))
        for i in items:
            for text in (i.article_id, i.content_hash, i.sketch.language):
                out.write(text.encode("utf-8"), True)
            out.write(b"\x00" if i.seed_story is None else b"\x01" + i.seed_story.encode(),
                      True)
            for number in (i.micros, i.sketch.shingles, i.sketch.words):
                out.write_var_int64(number)
            for name in SKETCH_BYTES:
                out.write(getattr(i.sketch, name), True)
        return out.get()

    def decode(self, data: bytes) -> list[StoryItem]:
        stream = InputStream(data)
        items = []
        for _ in range(stream.read_var_int64()):
            aid, chash, lang, seed = (stream.read_all(True) for _ in range(4))
            micros, shingles, words = (stream.read_var_int64() for _ in range(3))
            parts = {name: stream.read_all(True) for name in SKETCH_BYTES}
            sketch = Sketch(language=lang.decode(), shingles=shingles, words=words, **parts)
            items.append(StoryItem(aid.decode(), micros, chash.decode(), sketch,
                                   seed[1:].decode() if seed[:1] == b"\x01" else None))
        return items

    def is_deterministic(self) -> bool:
        return True


class CompareWithinKeyFn(CompareInGroupFn):
    """Stateful version of :class:`CompareInGroupFn` for triggers that fire repeatedly.

    State keeps the items of this key seen in earlier firings (a continuous pipeline),
    pruned to the time window and to ``max_per_key`` items; a timer clears it once the
    window has passed. Keys of the encoder vector keep nothing (:func:`kept_in_state`).
    """

    RECENT = ReadModifyWriteStateSpec("recent", StoryPoolCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, similarity: StorySimilarity, threshold: float, window: dt.timedelta,
                 max_per_key: int = MAX_PER_KEY, apart_below: float = 0.0,
                 stand_out_from: float | None = None):
        super().__init__(similarity, threshold, window, max_per_key, apart_below,
                         stand_out_from)
        self._window = window

    def process(self, element: tuple[str, Iterable[StoryItem]], window=beam.DoFn.WindowParam,
                recent=beam.DoFn.StateParam(RECENT),
                expire=beam.DoFn.TimerParam(EXPIRE)) -> Iterator[tuple[str, Edge]]:
        earlier: list[StoryItem] = recent.read() or []
        items = sorted(element[1], key=lambda i: i.order)
        self.group_size.update(len(items))
        n = 0
        for article_id, edge in matches_in_group(self._sim, earlier, items, self._threshold,
                                                 self._window_micros, self._max, element[0],
                                                 self._apart_below, self._stand_out_from):
            n += 1
            yield article_id, edge
        self.compared.inc(n)
        if not kept_in_state(element[0]):
            return
        # Blocking keys are not needed once grouped: state keeps the sketch without them.
        pool = sorted(earlier + [i._replace(sketch=dataclasses.replace(i.sketch, keys=()))
                                 for i in items if indexed_under(i, element[0])],
                      key=lambda i: i.order)
        if not pool:
            return
        newest = pool[-1].micros
        pool = [i for i in pool if newest - i.micros <= self._window_micros][-self._max:]
        recent.write(pool)
        expire.set(min(Timestamp(micros=newest) + Duration(micros=self._window_micros),
                       window.max_timestamp()))

    @on_timer(EXPIRE)
    def on_expire(self, recent=beam.DoFn.StateParam(RECENT)) -> Iterator[Any]:
        recent.clear()
        return iter(())


def drop_written(element: tuple[str, Iterable[StoryItem]]) -> Iterator[Any]:
    """Grouped by article_id: an article already in the output is not written again.

    Emits the seed (or the first new item) on the main output, keyed by its content hash,
    and, when a seed exists, one ``(article_id, Exact('url', article_id, 1.0))`` decision
    on ``dropped`` for the new ones.
    """
    article_id, group = element
    items = sorted(group, key=item_order)
    yield items[0].content_hash, items[0]
    if items[0].seed_story is not None and any(i.seed_story is None for i in items):
        yield beam.pvalue.TaggedOutput("dropped", (article_id, Exact("url", article_id, 1.0)))


def _by_block(item: StoryItem) -> Iterator[Any]:
    """An item under each of its blocking keys and, for a full article, the buckets its
    vector probes (:func:`~transforms.stories.similarity.probe_keys`, with
    :data:`VECTOR_PROBES`), and on ``order`` what ChooseParent needs of it
    (:func:`item_ref`)."""
    for key in item.sketch.keys:
        yield key, item
    if VECTOR_PROBES and item.sketch.vector and item.sketch.words >= SHORT_WORDS:
        # A headline's vector is a few words' worth: its near buckets say little, and a
        # feed of headlines would compare twice as many pairs for more wrong joins.
        for key in probe_keys(item.sketch.vector):
            yield key, item
    yield beam.pvalue.TaggedOutput("order", (item.article_id, item_ref(item)))


def _first_node(element: tuple[str, Iterable[StoryMessage]],
                threshold: float | None = None) -> Iterator[Any]:
    """ChooseParent: item + its candidate edges → the article's initial node.

    The item comes as its :class:`ItemRef`, the candidates as :class:`Edge`; only near
    copies and edges scoring at least ``threshold`` (every edge without one) can be
    parents. With :class:`Level` messages (the stage's stand-out step), an edge marked
    ``stand_out`` that :func:`stands_out` of its two articles' neighbourhoods counts as
    scoring ``threshold``. On ``edges``: the article's edges, one per earlier article (the
    best), as the vote reads them.
    """
    article_id, messages = element
    groups = by_type(messages, ItemRef, Edge, Level)
    first = min(groups[ItemRef], key=lambda ref: ref.order, default=None)
    if first is None:
        return
    seed_story = first.seed_story
    if seed_story is not None:
        yield Node(article_id, seed_story, True, "seed", None, None)
        return
    levels = {lv.article_id: lv.level for lv in groups[Level]}
    own = levels.get(article_id)
    best: dict[str, Edge] = {}
    for e in sorted(groups[Edge], key=lambda e: (e.target, e.score)):
        if (threshold is not None and e.stand_out and own is not None
                and e.target in levels and e.score < threshold
                and stands_out(e.score, own, levels[e.target])):
            e = e._replace(score=threshold, stand_out=False)
        kept = best.get(e.target)
        if kept is None or (e.near is not None, e.score) > (kept.near is not None, kept.score):
            best[e.target] = e
    for target in sorted(best):
        yield beam.pvalue.TaggedOutput("edges", (article_id, best[target]))
    edges: Iterable[Edge] = groups[Edge] if not levels else best.values()
    if threshold is not None:
        edges = [e for e in edges if e.near is not None or e.score >= threshold]
    parent = choose_parent(edges)
    if parent is None:
        yield Node(article_id, article_id, True, "lead", None, None)
    else:
        level = "near" if parent.near is not None else "echo"
        yield Node(article_id, parent.target, False, level, parent.score, parent.target)


def _round_messages(node: Node) -> Iterator[tuple[str, StoryMessage]]:
    """What a node sends in one pointer-jumping round (see :func:`_round_groups`).

    A done node goes to its own key, where it also answers for its pointer; a pending
    one sends its :class:`Pointer` to its own key and an :class:`Ask` to its pointer's
    key.
    """
    if node.done:
        yield node.article_id, Node._make(node)
    else:
        yield node.article_id, Pointer(node.ptr, False, node.level == "near")
        yield node.ptr, Ask._make(node)


def _round_groups(element: tuple[str, Iterable[StoryMessage]]) -> tuple[str, dict]:
    """A key's grouped :func:`_round_messages` as :func:`_jump` reads them: its own
    pointer (``info``: a :class:`Pointer`), the nodes asking it (``ask``) and itself when
    done (``self``)."""
    key, messages = element
    groups: dict[str, list] = {"info": [], "ask": [], "self": []}
    for message in messages:
        kind = type(message)
        if kind is Pointer:
            groups["info"].append(message)
        elif kind is Ask:
            groups["ask"].append(message)
        else:
            groups["self"].append(message)
            groups["info"].append(Pointer(message.ptr, True, message.level == "near"))
    return key, groups


def _jump(element: tuple[str, dict]) -> Iterator[Node]:
    """One pointer-jumping round at key ``k``: every node is emitted exactly once.

    Done nodes come back from their own key; a node still pointing at ``k`` takes ``k``'s
    pointer (and, on its first jump, learns whether its parent is a near copy).
    """
    key, groups = element
    infos = list(groups["info"])
    # A pointer to an article outside this run cannot happen (seeds are read back).
    ptr, done, ptr_near = infos[0] if infos else (key, True, False)
    yield from groups.get("self", ())
    for node in sorted(groups["ask"]):
        parent_near = node.parent_near if node.parent_near is not None else ptr_near
        yield Node(node.article_id, ptr, done, node.level, node.score, node.parent,
                   parent_near)


def _jump_grouped(element: tuple[str, Iterable[StoryMessage]]) -> Iterator[Node]:
    """:func:`_jump` on a key's grouped :func:`_round_messages`."""
    return _jump(_round_groups(element))

class JumpWithMemoryFn(beam.DoFn):
    """Stateful :func:`_jump` for a continuous pipeline: a key's pointer outlives its window.

    The parent of an article may have come in an earlier window. What that parent pointed
    at when it entered this round is kept in state (for the story window after the
    group's timestamp), so a later child still takes the right pointer: exactly what the
    parent's own node would have answered had both been in one window.
    """

    INFO = ReadModifyWriteStateSpec("info", StoryMessageCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, window: dt.timedelta):
        self._window = Duration(seconds=window.total_seconds())

    def process(self, element: tuple[str, Iterable[StoryMessage]],
                timestamp=beam.DoFn.TimestampParam, info=beam.DoFn.StateParam(INFO),
                expire=beam.DoFn.TimerParam(EXPIRE)) -> Iterator[Node]:
        key, groups = _round_groups(element)
        infos = list(groups["info"])
        if infos:
            info.write(infos[0])
            expire.set(timestamp + self._window)
        else:
            remembered = info.read()
            if remembered is not None:
                groups = dict(groups, info=[remembered])
        yield from _jump((key, groups))

    @on_timer(EXPIRE)
    def on_expire(self, info=beam.DoFn.StateParam(INFO)) -> Iterator[Any]:
        info.clear()
        return iter(())


class WithMemory(beam.PTransform):
    """Grouped ``(key, values)`` of one fixed window → ``fn``, whose keyed state outlives it.

    The groups move into the global window, where ``fn``'s state lives until its own
    expiry timer clears it; every output goes back into ``windowfn``. A group's timestamp
    is the end of its window (the default for fixed windows), so each output returns to
    the window its group came from, on time. Returns the main output, or a dict of the
    main (``main``) and tagged outputs when ``tags`` are given. ``values`` is the type of
    a group's values and ``outputs`` the types of ``fn``'s outputs (main, then the
    ``tags`` in order): what their coders are chosen by.
    """

    def __init__(self, fn: beam.DoFn, windowfn: Any, tags: tuple[str, ...] = (),
                 values: Any = Iterable[StoryMessage], outputs: tuple = (Any,)):
        super().__init__()
        self._fn = fn
        self._windowfn = windowfn
        self._tags = tags
        self._values = values
        self._outputs = outputs

    def expand(self, groups):
        # The keys are strings, and keyed state needs a deterministic key coder; the
        # values keep the coder of their type.
        moved = (groups
                 | "StringKeys" >> beam.Map(lambda kv: kv).with_output_types(
                     tuple[str, self._values])
                 | "IntoGlobalWindow" >> beam.WindowInto(GlobalWindows()))
        main, *tagged = self._outputs
        remember = beam.ParDo(self._fn).with_output_types(
            main, **dict(zip(self._tags, tagged, strict=True)))
        if not self._tags:
            out = moved | "Remember" >> remember
            return out | "BackIntoWindows" >> beam.WindowInto(self._windowfn)
        outs = moved | "Remember" >> remember.with_outputs(*self._tags, main="main")
        return {tag: outs[tag] | f"BackIntoWindows{tag.title()}" >> beam.WindowInto(self._windowfn)
                for tag in ("main", *self._tags)}


class _PointerRounds(beam.PTransform):
    """Rounds of keyed pointer look-ups (:func:`_jump`), batch or continuous.

    With ``windowfn`` (a continuous pipeline) each look-up also remembers every key's
    pointer for ``window`` (:class:`JumpWithMemoryFn`), so it reaches back into earlier
    windows. ``rounds`` defaults to the subclass's :attr:`ROUNDS`.
    """

    ROUNDS = 1

    def __init__(self, rounds: int | None = None, windowfn: Any = None,
                 window: dt.timedelta = DEFAULT_WINDOW):
        super().__init__()
        self._rounds = self.ROUNDS if rounds is None else rounds
        self._windowfn = windowfn
        self._window = window

    def _look_up(self, groups, label: str):
        """``_jump`` over a key's grouped :func:`_round_messages`."""
        if self._windowfn is None:
            return groups | label >> beam.FlatMap(_jump_grouped)
        return groups | label >> WithMemory(JumpWithMemoryFn(self._window), self._windowfn,
                                            outputs=(Node,))


class ResolveStories(_PointerRounds):
    """Nodes with parent pointers → nodes whose ``ptr`` is their story's label.

    Each round is one GroupByKey and halves every remaining chain, so ``rounds`` rounds
    resolve chains ``2**rounds`` articles deep; across windows, chains reach back into
    earlier windows. In a batch, a node leaves the rounds as soon as it is done and no
    node asks for it (see :func:`_batch_round`).
    """

    ROUNDS = RESOLVE_ROUNDS

    def expand(self, nodes):
        if self._windowfn is None:
            return self._expand_batch(nodes)
        for r in range(self._rounds):
            # One message per done node and two per pending one, grouped in one shuffle:
            # what a CoGroupByKey of info, asks and done nodes would give, for less.
            groups = (nodes
                      | f"Messages{r}" >> beam.FlatMap(_round_messages)
                      .with_output_types(tuple[str, StoryMessage])
                      | f"JoinPointers{r}" >> beam.GroupByKey())
            nodes = self._look_up(groups, f"Jump{r}")
        return nodes

    def _expand_batch(self, nodes):
        """The rounds of one batch: each a shuffle and one step that jumps and sends the
        next round's messages, or lets finished nodes out."""
        messages = nodes | "Messages0" >> beam.FlatMap(_round_messages).with_output_types(
            tuple[str, StoryMessage])
        finished = []
        for r in range(self._rounds):
            out = (messages
                   | f"JoinPointers{r}" >> beam.GroupByKey()
                   | f"Jump{r}" >> beam.FlatMap(_batch_round, r == self._rounds - 1)
                   .with_output_types(tuple[str, StoryMessage], finished=Node)
                   .with_outputs("finished", main="messages"))
            finished.append(out.finished)
            messages = out.messages
        return finished | "Resolved" >> beam.Flatten().with_output_types(Node)


def _batch_round(element: tuple[str, Iterable[StoryMessage]],
                 last: bool) -> Iterator[Any]:
    """One batch round at one key: :func:`_jump`, then each node's next messages.

    A done node whose key no node asks for leaves the rounds (``finished``): a node asks
    next round only for the pointer of a node that asked this round, so none will ask for
    it again, and a done node would only be passed on unchanged. After the last round
    every node is finished.
    """
    key, groups = _round_groups(element)
    for node in _jump((key, groups)):
        if last or (node.done and node.article_id == key and not groups["ask"]):
            yield beam.pvalue.TaggedOutput("finished", node)
        else:
            yield from _round_messages(node)


def _vote_ask(article_edge: tuple[str, Edge]) -> list[tuple[str, Ask]]:
    """An echo's candidate edge → an ask for the story of the article it matched."""
    article_id, edge = article_edge
    if edge.near is not None:
        return []
    return [(edge.target, Ask(article_id, edge.target, False, "vote", edge.score,
                              edge.target, None))]


def _story_messages(node: Node) -> Iterator[Any]:
    """An article's node → what it answers to the asks for its story (a
    :class:`Pointer`) and, on ``node``, itself for the join with its votes."""
    yield node.article_id, Pointer(node.ptr, node.done, node.level == "near")
    yield beam.pvalue.TaggedOutput("node", (node.article_id, node))


def _vote_message(vote: Node) -> tuple[str, Vote]:
    return vote.article_id, Vote._make(vote)


class VoteStories(_PointerRounds):
    """(resolved nodes, candidate edges) → nodes whose echoes sit in their best story.

    Pointer jumping follows each article's single best match: one stray match of an early
    article takes every article that joined it into the wrong story, and a story whose
    articles matched one another along a chain is split where the chain breaks once. Each
    round looks up the story of every earlier article an echo matched (a join keyed by
    that article: a pointer-jumping round, remembered across windows in the same way) and
    moves the echo to the story that holds most of its matches (:func:`vote_story`).
    Labels are story leads or seeds, which never move, so no new chains form.

    ``join_last=False`` leaves the last round's join to the caller: the transform then
    returns two collections of messages keyed by article id, the nodes before that round
    (:class:`Node`) and its votes (:class:`Vote`), which :class:`AssignStories` joins with
    its own decisions by article id.
    """

    ROUNDS = VOTE_ROUNDS

    def __init__(self, rounds: int | None = None, windowfn: Any = None,
                 window: dt.timedelta = DEFAULT_WINDOW, join_last: bool = True,
                 threshold: float | None = None):
        super().__init__(rounds, windowfn, window)
        self._join_last = join_last
        self._threshold = threshold

    def expand(self, pcolls):
        nodes, edges = pcolls
        asks = edges | "VoteAsks" >> beam.FlatMap(_vote_ask).with_output_types(
            tuple[str, Ask])
        for r in range(self._rounds):
            # Story look-ups: a pointer-jumping round whose asks are the edges.
            own = nodes | f"StoryOf{r}" >> beam.FlatMap(_story_messages).with_output_types(
                tuple[str, Pointer], node=tuple[str, Node]).with_outputs("node", main="info")
            groups = ((own.info, asks)
                      | f"Messages{r}" >> beam.Flatten().with_output_types(
                          tuple[str, StoryMessage])
                      | f"LookUpStories{r}" >> beam.GroupByKey())
            if self._windowfn is None:
                votes = groups | f"Look{r}" >> beam.FlatMap(_looked_up).with_output_types(
                    tuple[str, Vote])
            else:
                votes = (self._look_up(groups, f"Look{r}")
                         | f"VoteById{r}" >> beam.Map(_vote_message).with_output_types(
                             tuple[str, Vote]))
            if r == self._rounds - 1 and not self._join_last:
                return own.node, votes
            nodes = ((own.node, votes)
                     | f"Votes{r}" >> beam.Flatten().with_output_types(
                         tuple[str, StoryMessage])
                     | f"JoinVotes{r}" >> beam.GroupByKey()
                     | f"Vote{r}" >> beam.FlatMap(_voted, self._threshold))
        return nodes


def _looked_up(element: tuple[str, Iterable[StoryMessage]]) -> Iterator[tuple[str, Vote]]:
    """A batch story look-up at one key (:func:`_jump` on :func:`_round_groups`): the
    votes, keyed by the article that asked."""
    for vote in _jump_grouped(element):
        yield _vote_message(vote)


def _voted(element: tuple[str, Iterable[StoryMessage]],
           threshold: float | None = None) -> Iterator[Node]:
    """An article's resolved node and its looked-up matches → its node after the vote."""
    groups = by_type(element[1], Node, Vote)
    for node in groups[Node][:1]:
        yield vote_story(node, groups[Vote], threshold)


class AssembleStoriesFn(beam.DoFn):
    """Joins each article with its exact-duplicate decision or its story node.

    Input: an article id's grouped messages: its :class:`~schemas.Article`, an
    :class:`Exact` decision, its :class:`Node` and, with ``voted``, the :class:`Vote`
    messages (the looked-up matches of the last :class:`VoteStories` round).
    """

    def __init__(self, drop_echoes: bool, clock=None, voted: bool = False,
                 threshold: float | None = None):
        self._drop_echoes = drop_echoes
        self._threshold = threshold
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._voted = voted
        self.leads = Metrics.counter(NAMESPACE, "story_leads")
        self.echoes = Metrics.counter(NAMESPACE, "story_echoes")
        self.near = Metrics.counter(NAMESPACE, "duplicates_near")
        self.dropped_echoes = Metrics.counter(NAMESPACE, "duplicates_echo")
        self.unresolved = Metrics.counter(NAMESPACE, "story_chains_unresolved")

    def process(self, element: tuple[str, Iterable[Decision]]) -> Iterator[Any]:
        article_id, messages = element
        groups = by_type(messages, Article, Exact, Node, Vote)
        articles = sorted(groups[Article], key=lambda a: (to_micros(event_time(a)), a.url))
        if not articles:
            return
        now = self._clock()
        first, rest = articles[0], articles[1:]
        for other in rest:  # same id twice in one batch: the same canonical URL
            yield beam.pvalue.TaggedOutput(
                "duplicates", duplicate_of(other, article_id, "url", 1.0, now))
        exact = sorted(groups[Exact])
        if exact:
            level, kept, sim = exact[0]
            yield beam.pvalue.TaggedOutput(
                "duplicates", duplicate_of(first, kept, level, sim, now))
            return
        nodes = groups[Node]
        node = nodes[0] if nodes else None
        if node is not None and self._voted:
            # The last round of VoteStories, joined here by article id with the rest.
            node = vote_story(node, groups[Vote], self._threshold)
        root = None
        if node is not None and node.parent is not None:
            root = node.ptr
            if not node.done:
                self.unresolved.inc()
        kind, value = decide(first, node, root, self._drop_echoes)
        if kind == "article":
            (self.leads if value.is_story_lead else self.echoes).inc()
            yield value
        else:
            level, kept, sim = value
            (self.near if level == "near" else self.dropped_echoes).inc()
            yield beam.pvalue.TaggedOutput(
                "duplicates", duplicate_of(first, kept, level, sim, now))


# ------------------------------------------------------------------- the transform

class StoriesOutput(NamedTuple):
    """What :class:`AssignStories` returns."""

    articles: Any
    duplicates: Any


class AssignStories(beam.PTransform):
    """Articles → articles with story fields (``articles``) and DuplicateRecords.

    ``similarity`` is any :class:`~transforms.stories.similarity.StorySimilarity` (default
    lexical); ``threshold`` defaults to the similarity's own. ``existing`` is the output
    folder whose published articles seed the state (re-runs add no rows); ``run_id``
    excludes this run's own files from it. ``across_windows`` (the continuous pipeline,
    articles in fixed windows) makes an article match copies and stories of earlier
    windows within ``window``: see the module docstring. ``vote_rounds`` are the rounds of
    :class:`VoteStories` (0: every echo stays in the story of its best match).
    ``apart_floor``: compared pairs scoring from it up to the threshold are evidence
    against a story in the vote (:func:`vote_story`); ``None`` lets every match vote for
    its story, as when membership was decided pair by pair. ``common_share``: sketches
    are weighed by the document frequency of their window (features in more than this
    share of the window's articles count less: :mod:`transforms.stories.frequency`, whose
    ``COMMON_SHARE`` is the measured choice); ``None``, the default, leaves them as they
    are (docs/story-rounds.md, second round, says why). ``stand_out``: a pair of two
    full articles in two languages scoring from it up to the threshold joins when it
    stands out of both articles' neighbourhoods (:func:`stands_out`; needs the vote's
    pairs found apart);
    ``None`` decides every pair on the threshold alone; the default, :data:`AUTO`, is
    :data:`STAND_OUT_FLOOR` with a similarity that reads the encoder and ``None`` with
    the lexical one.
    """

    def __init__(self, similarity: StorySimilarity | None = None,
                 threshold: float | None = None, window: dt.timedelta = DEFAULT_WINDOW,
                 drop_echoes: bool = False, existing: str | None = None,
                 run_id: str | None = None, max_per_key: int = MAX_PER_KEY,
                 rounds: int = RESOLVE_ROUNDS, clock=None, across_windows: bool = False,
                 vote_rounds: int = VOTE_ROUNDS, apart_floor: float | None = APART_FLOOR,
                 common_share: float | None = None,
                 stand_out: float | str | None = AUTO):
        super().__init__()
        self._sim = similarity or LexicalSimilarity()
        self._threshold = self._sim.threshold if threshold is None else threshold
        if window <= dt.timedelta(0):
            raise ValueError("the story window must be positive")
        if max_per_key < 1 or rounds < 1 or vote_rounds < 0:
            raise ValueError("max_per_key and rounds must be at least 1, vote_rounds at "
                             "least 0")
        self._window = window
        self._drop_echoes = drop_echoes
        self._existing = existing
        self._run_id = run_id
        self._max = max_per_key
        self._rounds = rounds
        self._clock = clock
        self._across = across_windows
        self._votes = vote_rounds
        self._share = common_share
        # Pairs found apart only matter to the vote.
        self._apart = (None if not vote_rounds or apart_floor is None
                       else min(apart_floor, self._threshold))
        # Pairs under the threshold reach the stand-out step only as the vote's evidence.
        if stand_out == AUTO:
            stand_out = (STAND_OUT_FLOOR if isinstance(self._sim, MultilingualSimilarity)
                         else None)
        self._stand_out = None if self._apart is None else stand_out

    def expand(self, articles):
        # Keyed state only matters when a key can fire again in the same window, or (across
        # windows) when it must remember earlier windows.
        once = fires_once(articles.windowing)
        if self._across and not once:
            raise ValueError("across_windows needs windows that fire once (fixed windows, "
                             "default trigger, no allowed lateness)")
        windowfn = articles.windowing.windowfn if self._across else None
        items = articles | "SketchArticles" >> beam.ParDo(
            SketchArticleFn(self._sim)).with_output_types(tuple[str, StoryItem])
        if self._existing:
            bounds = (articles
                      | "EventTimes" >> beam.Map(lambda a: (event_time(a), event_time(a)))
                      | "BatchBounds" >> beam.CombineGlobally(event_bounds).without_defaults())
            seeds = (articles.pipeline
                     | "SeedRoot" >> beam.Create([self._existing])
                     | "ListSeedFiles" >> beam.ParDo(
                         ListSeedFilesFn(self._existing, self._run_id, self._window),
                         beam.pvalue.AsSingleton(bounds, default_value=None))
                     | "SpreadSeedFiles" >> beam.Reshuffle()
                     | "ReadSeeds" >> beam.ParDo(ReadSeedsFn(self._sim))
                     .with_output_types(tuple[str, StoryItem]))
            items = (items, seeds) | "WithSeeds" >> beam.Flatten().with_output_types(
                tuple[str, StoryItem])
        # Every message is typed where it is made: its coder (StoryMessageCoder) writes it
        # without pickling at each shuffle and stage boundary.
        keep_types = {"outputs": (StoryItem, tuple[str, Exact])}
        by_id = (items
                 | "GroupById" >> beam.GroupByKey()
                 | "DropWritten" >> beam.FlatMap(drop_written)
                 .with_output_types(tuple[str, StoryItem], dropped=tuple[str, Exact])
                 .with_outputs("dropped", main="kept"))
        id_kept, exact_sets = by_id.kept, [by_id.dropped]
        if self._across:
            # An article id already decided in an earlier window (an item listed again
            # after its sighting was forgotten) is not written twice.
            earlier = (by_id.kept
                       | "SingleById" >> beam.Map(lambda kv: (kv[1].article_id, [kv[1]]))
                       .with_output_types(tuple[str, list[StoryItem]])
                       | "KeepFirstById" >> WithMemory(KeepFirstItemFn("url", self._window),
                                                       windowfn, ("dropped",),
                                                       list[StoryItem], **keep_types))
            id_kept = (earlier["main"]
                       | "KeyByContent" >> beam.Map(lambda i: (i.content_hash, i))
                       .with_output_types(tuple[str, StoryItem]))
            exact_sets.append(earlier["dropped"])
        by_content = id_kept | "GroupByContent" >> beam.GroupByKey()
        if self._across:
            by_content = by_content | "KeepFirstByContent" >> WithMemory(
                KeepFirstItemFn("content", self._window), windowfn, ("dropped",),
                Iterable[StoryItem], **keep_types)
            kept = by_content["main"]
            exact_sets.append(by_content["dropped"])
        else:
            keep_fn = (KeepFirstItemInGroupFn("content") if once
                       else KeepFirstItemFn("content", self._window))
            by_content = by_content | "KeepFirstByContent" >> beam.ParDo(keep_fn).with_output_types(
                StoryItem, dropped=tuple[str, Exact]).with_outputs("dropped", main="kept")
            kept = by_content.kept
            exact_sets.append(by_content.dropped)
        if self._share is not None:
            kept = kept | "WeighByWindow" >> WeighByWindowFrequency(self._share)
        compare_fn = (CompareInGroupFn if once and not self._across else CompareWithinKeyFn)(
            self._sim, self._threshold if self._apart is None else self._apart,
            self._window, self._max, 0.0 if self._apart is None else self._threshold,
            self._stand_out)
        blocks = (kept
                  | "KeyByBlock" >> beam.FlatMap(_by_block)
                  .with_output_types(tuple[str, StoryItem], order=tuple[str, ItemRef])
                  .with_outputs("order", main="copies"))
        edges = (blocks.copies
                 | "GroupByBlock" >> beam.GroupByKey()
                 | "CompareWithinKey" >> (
                     WithMemory(compare_fn, windowfn, values=Iterable[StoryItem],
                                outputs=(tuple[str, Edge],))
                     if self._across
                     else beam.ParDo(compare_fn).with_output_types(tuple[str, Edge])))
        if self._stand_out is not None:
            # Every article's neighbourhood level, from the pairs it was compared in on
            # either side, goes with its edges and to the later articles that need it.
            edges = (edges
                     | "PeersBothWays" >> beam.FlatMap(peer_messages).with_output_types(
                         tuple[str, StoryMessage])
                     | "GroupPeers" >> beam.GroupByKey()
                     | "Neighbourhoods" >> beam.FlatMap(levelled).with_output_types(
                         tuple[str, StoryMessage]))
        # ChooseParent needs an item's order and seed story, not its sketch.
        chosen = ((blocks.order, edges)
                  | "Candidates" >> beam.Flatten().with_output_types(tuple[str, StoryMessage])
                  | "JoinCandidates" >> beam.GroupByKey()
                  | "ChooseParent" >> beam.FlatMap(_first_node, self._threshold)
                  .with_output_types(Node, edges=tuple[str, Edge])
                  .with_outputs("edges", main="nodes"))
        nodes, edges = chosen.nodes, chosen.edges
        # Pointers are remembered for two story windows after their poll: a late-polled
        # article can still match one published a whole window before it, and a pointer
        # is a few bytes.
        resolved = nodes | "ResolveStories" >> ResolveStories(self._rounds, windowfn,
                                                              2 * self._window)
        # Everything decided about an article meets in one GroupByKey by article id.
        decisions = [
            articles | "ArticlesById" >> beam.Map(lambda a: (a.article_id, a))
            .with_output_types(tuple[str, Article]),
            exact_sets | "ExactDecisions" >> beam.Flatten().with_output_types(
                tuple[str, Exact])]
        if self._votes:
            decisions.extend((resolved, edges) | "VoteStories" >> VoteStories(
                self._votes, windowfn, 2 * self._window, join_last=False,
                threshold=None if self._apart is None else self._threshold))
        else:
            decisions.append(resolved | "NodesById" >> beam.Map(
                lambda n: (n.article_id, n)).with_output_types(tuple[str, Node]))
        out = (decisions
               | "Decisions" >> beam.Flatten().with_output_types(tuple[str, Decision])
               | "JoinDecisions" >> beam.GroupByKey()
               | "AssembleStories" >> beam.ParDo(
                   AssembleStoriesFn(self._drop_echoes, self._clock, bool(self._votes),
                                     None if self._apart is None else self._threshold))
               .with_outputs("duplicates", main="articles"))
        return StoriesOutput(out.articles, out.duplicates)
