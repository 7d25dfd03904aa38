"""Candidate story signals, studied offline on the design week sets before any is built.

A signal that might help the story stage is first measured here, on the articles of
``tests/fixtures/stories/dev.jsonl`` and ``dev2.jsonl`` (never ``test.jsonl``: its figures
are the reported ones). No Beam, no model fit: every pair (or article and event) of a set
is scored by the signal and ranked, and the table says how well same-event pairs rank
above the others. The stage decides at the high-precision end of that ranking, so the
columns that matter are the recall at precision 0.8, 0.9 and 0.95 (``R@P``), beside the
area under the ROC curve; ``cross`` keeps the pairs of two languages, where the stage
loses most of its recall.

Signals of a pair (``pairs``):

* ``score``: the stage's own pair score (the shipped ``multilingual`` model, with the
  penalty for pairs published over a day apart): the reference;
* ``cosine``: the encoder cosine of headline and lead, as sketches keep it;
* ``centred``: the same after taking each language's mean vector of the set away (a
  known correction for the language component of multilingual vectors), then again
  with the mean shrunk towards the mean of the stories-dev pair texts of that language
  (``centred-shrunk``), as a stream with few articles of a language would need;
* ``sentences``: headline and sentences encoded one by one (at most 8), each matched to its
  best counterpart in the other article, the two directions averaged.

Signals of an article and an event (``stories``), for every article against every gold
event of at least two other members within two days: the best pair (``nearest``), the
mean of the pairs (``mean``), the cosine with the event's mean vector (``centroid``) and
with the mean vector of its members of other languages (``centroid-other``). Gold events
stand in for the stories the stage would have formed, so this is a ceiling.

``merges`` asks whether stories, once formed, should merge: the set goes through the real
stage, then two stories merge (greedy average linkage, best first) when the mean log-odds
of all pairs of their members (publication gap counted, as the stage counts it) reaches the
stage's threshold less ``d``, optionally only when their leads' names agree (the mean over
those pairs of :func:`names_against` at most a gate) and only when one story has two or
more members (``min_pairs`` 2). ``merges --pairs`` does the same in the ``pairs-batch``
batches. ``gaps`` lists the pairs of a set that the publication-gap penalty alone puts
under the threshold, with their names-against.

``guard`` runs the stage twice, with the stand-out step's guard (an article needs
:data:`~transforms.stories.neighbourhood.STAND_OUT_PAIRS` compared pairs for a level) and
without it, and lists the pairs whose decision changes, with their names-against: whether
names could stand in for that guard (``guard --pairs``: in the ``pairs-batch`` batches).

``singletons`` tries the best of them on the stage's own stories: the set goes through the
real :class:`~transforms.stories.stage.AssignStories` (FnApiRunner, one batch), then each
article left alone moves to the story of 2+ members within two days whose other-language
centroid is nearest, when that cosine reaches a cut; BCubed before and for each cut.
``singletons --pairs`` does the same in the batches of ``bench_stories.py pairs-batch`` (each
fold of the stories-dev pairs through the stage with models fitted on the other folds;
needs ``../shared``) and prints pair F1 and the hard negatives joined, for each cut.

``respell`` compares the stage's respelling of Ukrainian for the encoder (a word table and
letter rules, :mod:`transforms.stories.spelling`) with two other readings: one that picks,
for each word outside the table, the most frequent Russian word among the spellings the
letter and ending correspondences allow (``bench_stories.frequent_spelling``), and an
English word gloss from the lexicon of the ``dormouse-ua`` package, respelled where it has
no entry (``bench_stories.english_gloss``; that package must be installed). Over the pairs
of a Ukrainian article and one of another language it prints the ranking of the encoder
cosine and of the stage's pair score under each, and the pairs over the threshold (the same
choice through the stage: ``bench_stories.py week --set dev|dev2 --spelling
frequency|gloss``).

One file holds every signal studied this way, so that each reads the sets, scores and
ranks as the others do (hence over 600 lines).

Run (the encoder ships in the package; ``centred-shrunk`` also reads ``../shared``)::

    .venv/bin/python bench/bench_story_signals.py pairs [--set dev|dev2]
    .venv/bin/python bench/bench_story_signals.py stories [--set dev|dev2]
    .venv/bin/python bench/bench_story_signals.py singletons [--set dev|dev2 | --pairs]
    .venv/bin/python bench/bench_story_signals.py merges [--set dev|dev2 | --pairs]
    .venv/bin/python bench/bench_story_signals.py gaps [--set dev|dev2]
    .venv/bin/python bench/bench_story_signals.py guard [--set dev|dev2 | --pairs]
    .venv/bin/python bench/bench_story_signals.py respell [--set dev|dev2]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import itertools
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_stories as bs  # noqa: E402

from transforms.stories.messages import to_micros  # noqa: E402
from transforms.stories.neighbourhood import APART_FLOOR  # noqa: E402
from transforms.stories.similarity import (  # noqa: E402
    BRIDGED,
    ENCODER_LANGUAGES,
    MultilingualSimilarity,
    _logit,
    encode_meaning,
    meaning_text,
    quantize,
    skeleton,
    token_features,
    tokenize,
    unit_vector,
    zipf,
)
from transforms.stories.spelling import russian_spelling  # noqa: E402
from transforms.stories.stage import later_by  # noqa: E402

DESIGN_SETS = ("dev", "dev2")
PRECISIONS = (0.8, 0.9, 0.95)
SHRINK = 4
"""Articles' worth of weight the prior mean of a language gets in ``centred-shrunk``."""
MAX_SENTENCES = 8
STORY_HOURS = 48
CUTS = (0.55, 0.60, 0.65, 0.70)
"""Centroid cosines from which ``singletons`` moves an article alone into a story."""
MERGES = ((0.5, None, 1), (0.75, None, 1), (0.75, None, 2), (0.5, 0.5, 1), (0.75, 0.5, 1),
          (0.75, 0.5, 2), (1.0, 0.5, 2))
"""``merges`` settings: (log-odds under the threshold, names gate or None, min pairs)."""
MARK_CHARS = 500
COMMON_ZIPF = 4.0
_SENTENCE_END = re.compile(r"(?<=[.!?»\"])\s+(?=[A-ZА-ЯІЇЄҐÄÖÜ«\"])")


def auc(gold: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    pos = int(gold.sum())
    neg = len(gold) - pos
    return float((ranks[gold].sum() - pos * (pos + 1) / 2) / (pos * neg))


def recall_at(gold: np.ndarray, score: np.ndarray, precision: float) -> float:
    """The largest recall of a cut of the ranking whose precision is at least ``precision``."""
    ranked = gold[np.argsort(-score, kind="stable")]
    hits = np.cumsum(ranked)
    ok = np.flatnonzero(hits / np.arange(1, len(ranked) + 1) >= precision)
    return float(hits[ok.max()] / gold.sum()) if len(ok) else 0.0


def row(label: str, gold: np.ndarray, score: np.ndarray) -> str:
    cells = " ".join(f"{recall_at(gold, score, p):>6.2f}" for p in PRECISIONS)
    return f"  {label:<28} AUC {auc(gold, score):.3f}   R@P {cells}"


def read_set(name: str) -> list[dict]:
    if name not in DESIGN_SETS:
        raise SystemExit(f"--set {name}: signals are studied on the design sets only "
                         f"({', '.join(DESIGN_SETS)})")
    with (bs.WEEK / f"{name}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def encoder_text(text: str, language: str) -> str:
    """What the encoder reads of a text in ``language`` (Ukrainian respelled)."""
    return russian_spelling(text) if language in BRIDGED else text


def vectors(texts: list[str]) -> np.ndarray:
    """Unit vectors of ``texts``, 4-bit quantised as sketches keep them."""
    return np.array([unit_vector(quantize(v)) for v in encode_meaning(texts)])


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def prior_means() -> dict[str, np.ndarray]:
    """Mean vector per language of the stories-dev pair texts (empty without ../shared)."""
    if not bs.PAIRS.exists():
        return {}
    texts: dict[str, tuple[str, str]] = {}
    with bs.PAIRS.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            for k in ("1", "2"):
                texts.setdefault(r["text" + k], (r["lang" + k], meaning_text(
                    *bs.split_title(r["text" + k]))))
    items = [v for v in texts.values() if v[0] in ENCODER_LANGUAGES]
    vecs = np.concatenate([vectors([t for _, t in items[i:i + 64]])
                           for i in range(0, len(items), 64)])
    langs = np.array([lang for lang, _ in items])
    return {lang: vecs[langs == lang].mean(axis=0) for lang in set(langs.tolist())}


def centred(vecs: np.ndarray, langs: np.ndarray, prior: dict | None = None) -> np.ndarray:
    """Each vector less its language's mean in the set (shrunk towards ``prior``)."""
    out = vecs.copy()
    for lang in set(langs.tolist()):
        mask = langs == lang
        mean = vecs[mask].mean(axis=0)
        if prior is not None:
            base = prior.get(lang, prior.get("ru"))  # Ukrainian is read respelled as Russian
            mean = (vecs[mask].sum(axis=0) + SHRINK * base) / (mask.sum() + SHRINK)
        out[mask] -= mean
    return unit_rows(out)


def sentences(title: str, body: str) -> list[str]:
    parts = [title] + [s for para in body.split("\n\n")
                       for s in _SENTENCE_END.split(para.strip()) if len(s) > 20]
    return parts[:MAX_SENTENCES]


def published(row_: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(row_["published"].replace("Z", "+00:00"))


def centroid(vs: np.ndarray) -> np.ndarray:
    """Unit-length mean of the rows of ``vs``."""
    c = vs.mean(axis=0)
    return c / np.linalg.norm(c)


def other_language_centroid(vs: np.ndarray, langs: np.ndarray, language: str) -> np.ndarray:
    """:func:`centroid` of the rows in other languages than ``language`` (of all if none)."""
    others = langs != language
    return centroid(vs[others] if others.any() else vs)


def run_pairs(name: str) -> None:
    rows = read_set(name)
    langs = np.array([r["language"] for r in rows])
    events = [r["event"] for r in rows]
    sim = MultilingualSimilarity()
    sketches = [sim.sketch(r["title"], r["text"], r["language"]) for r in rows]
    vecs = np.array([unit_vector(s.vector) for s in sketches])
    times = [to_micros(published(r)) for r in rows]
    by_sentence = [vectors([encoder_text(s, r["language"])
                            for s in sentences(r["title"], r["text"])]) for r in rows]
    prior = prior_means()
    spaces = {"cosine": vecs, "centred": centred(vecs, langs)}
    if prior:
        spaces["centred-shrunk"] = centred(vecs, langs, prior)
    pairs = list(itertools.combinations(range(len(rows)), 2))
    gold = np.array([events[i] == events[j] for i, j in pairs])
    cross = np.array([langs[i] != langs[j] for i, j in pairs])
    scores = {"score": np.array([later_by(sim.score(sketches[i], sketches[j]),
                                          abs(times[i] - times[j]))
                                 for i, j in pairs])}
    for label, space in spaces.items():
        scores[label] = np.array([float(space[i] @ space[j]) for i, j in pairs])
    aligned = []
    for i, j in pairs:
        m = by_sentence[i] @ by_sentence[j].T
        aligned.append((m.max(axis=1).mean() + m.max(axis=0).mean()) / 2.0)
    scores["sentences"] = np.array(aligned)
    print(f"pairs of {name}.jsonl: {len(pairs)} ({int(gold.sum())} same-event, "
          f"{int(cross.sum())} of two languages); R@P at precision "
          + ", ".join(map(str, PRECISIONS)))
    for subset, mask in (("all", np.ones(len(pairs), bool)), ("cross", cross)):
        for label, score in scores.items():
            print(row(f"{subset:<6}{label}", gold[mask], score[mask]))


def run_stories(name: str) -> None:
    rows = read_set(name)
    langs = np.array([r["language"] for r in rows])
    events = np.array([r["event"] for r in rows])
    times = np.array([to_micros(published(r)) for r in rows])
    sim = MultilingualSimilarity()
    vecs = np.array([unit_vector(sim.sketch(r["title"], r["text"], r["language"]).vector)
                     for r in rows])
    gold, found = [], {"nearest": [], "mean": [], "centroid": [], "centroid-other": []}
    for i in range(len(rows)):
        for event in sorted(set(events.tolist())):
            members = events == event
            members[i] = False
            members &= np.abs(times - times[i]) <= STORY_HOURS * 3.6e9
            if members.sum() < 2:
                continue
            cos = vecs[members] @ vecs[i]
            gold.append(events[i] == event)
            found["nearest"].append(cos.max())
            found["mean"].append(cos.mean())
            found["centroid"].append(centroid(vecs[members]) @ vecs[i])
            found["centroid-other"].append(
                other_language_centroid(vecs[members], langs[members], langs[i]) @ vecs[i])
    g = np.array(gold)
    print(f"articles and gold events of {name}.jsonl: {len(g)} (article, event of 2+ other "
          f"members within {STORY_HOURS} h), {int(g.sum())} the article's own")
    for label, score in found.items():
        print(row(label, g, np.array(score)))


def centroid_moves(pred: dict[str, str], vecs: dict[str, np.ndarray], langs: dict[str, str],
                   times: dict[str, int] | None = None) -> list[tuple[float, str, str]]:
    """(cosine, article, story) for each article alone in ``pred``: the story of 2+ members
    whose :func:`other_language_centroid` is nearest. With ``times``, only the members
    published within STORY_HOURS of the article count (a story with none is skipped)."""
    members: dict[str, list[str]] = {}
    for aid, label in pred.items():
        members.setdefault(label, []).append(aid)
    moves = []
    for ids in members.values():
        if len(ids) != 1:
            continue
        aid = ids[0]
        best = None
        for label, ms in members.items():
            near = [m for m in ms if times is None
                    or abs(times[m] - times[aid]) <= STORY_HOURS * 3.6e9]
            if len(ms) < 2 or not near:
                continue
            cos = float(other_language_centroid(np.array([vecs[m] for m in near]),
                                                np.array([langs[m] for m in near]),
                                                langs[aid]) @ vecs[aid])
            if best is None or (cos, label) > best:
                best = (cos, label)
        if best is not None:
            moves.append((best[0], aid, best[1]))
    return moves


def event_marks(title: str, body: str, language: str) -> set[str]:
    """Names (consonant skeletons of capitalised words, not sentence-initial, under Zipf 4
    in ``language``) and numbers of two digits or more (not years) of headline and lead."""
    out = set()
    for text in (title, body[:MARK_CHARS]):
        for sentence in _SENTENCE_END.split(text):
            for tok in tokenize(sentence)[1:]:
                if tok.isdigit():
                    if number := token_features(tok, language)[1]:  # "" for years, digits
                        out.add(number)
                elif (tok[0].isupper() and len(tok) >= 3
                      and zipf(tok.lower(), language) < COMMON_ZIPF
                      and len(sk := skeleton(tok)) >= 3):
                    out.add(sk)
    return out


def named(title: str, body: str) -> set[str]:
    """Every skeleton and number of the text (what it can be said to mention)."""
    out = set()
    for tok in tokenize(title + " " + body):
        if tok.isdigit():
            out.add("#" + tok.lstrip("0"))
        elif len(tok) >= 3 and len(sk := skeleton(tok)) >= 3:
            out.add(sk)
    return out


def names_against(marks_a: set, named_a: set, marks_b: set, named_b: set) -> float:
    """Share of one lead's marks the other text never names, for the side covered best;
    1.0 when either lead has none (no sign that the two name the same things: texts
    without a headline, languages without capitals)."""
    if not marks_a or not marks_b:
        return 1.0
    return min(len(marks_a - named_b) / len(marks_a), len(marks_b - named_a) / len(marks_b))


def log_odds(score: float) -> float:
    """Log-odds of a pair score, floored as the stage floors a compared pair."""
    return _logit(min(max(score, APART_FLOOR), 0.999))


def average_linkage(pred: dict[str, str], pair_lo: dict[tuple[str, str], float], cut: float,
                    against: dict[tuple[str, str], float] | None, gate: float | None,
                    min_pairs: int) -> dict[str, str]:
    """Merges stories of ``pred`` best first while the mean log-odds of their member pairs
    (``pair_lo``, keyed by sorted ids) reaches ``cut``; with ``gate``, only stories whose
    member pairs' mean ``against`` is at most ``gate``."""
    groups: dict[str, list[str]] = {}
    for aid, label in pred.items():
        groups.setdefault(label, []).append(aid)
    hot = [p for p, v in pair_lo.items() if v >= cut]  # a merge needs one such pair

    def pairs_of(a_ids: list[str], b_ids: list[str]) -> list[tuple[str, str]]:
        return [(a, b) if a < b else (b, a) for a in a_ids for b in b_ids]

    while True:
        owner = {aid: label for label, ids in groups.items() for aid in ids}
        candidates = sorted({tuple(sorted((owner[a], owner[b]))) for a, b in hot
                             if owner[a] != owner[b]})
        best = None
        for la, lb in candidates:
            pairs = pairs_of(groups[la], groups[lb])
            mean = sum(pair_lo[p] for p in pairs) / len(pairs)
            if len(pairs) < min_pairs or mean < cut:
                continue
            if gate is not None and np.mean([against[p] for p in pairs]) > gate:
                continue
            if best is None or mean > best[0]:
                best = (mean, la, lb)
        if best is None:
            return {aid: label for label, ids in groups.items() for aid in ids}
        _, la, lb = best
        groups[la] += groups.pop(lb)


def merge_setting(setting: tuple) -> str:
    d, gate, min_pairs = setting
    return f"d {d:.2f}, names gate {gate if gate is not None else '-'}, min pairs {min_pairs}"


def pair_tables(ids: list[str], score, marks: dict, names: dict) -> tuple[dict, dict]:
    """Log-odds and names-against of every pair of ``ids`` (keys: sorted id pairs)."""
    lo, against = {}, {}
    for a, b in itertools.combinations(sorted(ids), 2):
        lo[(a, b)] = log_odds(score(a, b))
        against[(a, b)] = names_against(marks[a], names[a], marks[b], names[b])
    return lo, against


def set_features(rows: list[dict], sim) -> tuple[dict, dict, dict, dict]:
    """Per article of a design set: sketch, publication time (micros), event marks and
    named skeletons."""
    return ({r["id"]: sim.sketch(r["title"], r["text"], r["language"]) for r in rows},
            {r["id"]: to_micros(published(r)) for r in rows},
            {r["id"]: event_marks(r["title"], r["text"], r["language"]) for r in rows},
            {r["id"]: named(r["title"], r["text"]) for r in rows})


def through_stage(name: str) -> tuple[list[dict], dict, dict, object, float]:
    """A design set through the real stage: its rows, gold events, stories (id → story),
    the similarity and the seconds taken."""
    rows = read_set(name)
    gold = {r["id"]: r["event"] for r in rows}
    articles = [bs.article(r["id"], r["title"], r["text"], r["language"], published(r))
                for r in rows]
    stories, _, took, sim = bs.assign_stories(articles, "multilingual")
    return rows, gold, {r["id"]: stories.get(r["id"], r["id"]) for r in rows}, sim, took


def run_merges(name: str) -> None:
    rows, gold, pred, sim, _ = through_stage(name)
    ids = [r["id"] for r in rows]
    sketches, times, marks, names = set_features(rows, sim)
    lo, against = pair_tables(
        ids, lambda a, b: later_by(sim.score(sketches[a], sketches[b]),
                                   abs(times[a] - times[b])), marks, names)
    golds = [gold[i] for i in ids]
    p, r, f = bs.bcubed([pred[i] for i in ids], golds)
    print(f"{name}.jsonl through the stage: BCubed P={p:.3f} R={r:.3f} F1={f:.3f}")
    for setting in MERGES:
        merged = average_linkage(pred, lo, _logit(sim.threshold) - setting[0], against,
                                 setting[1], setting[2])
        p, r, f = bs.bcubed([merged[i] for i in ids], golds)
        print(f"  {merge_setting(setting)}: {len(set(merged.values()))} stories; "
              f"BCubed P={p:.3f} R={r:.3f} F1={f:.3f}")


def run_merges_pairs() -> None:
    rows, x, gold, cross, hard, batches = pairs_batches()
    same = {s: np.zeros(len(x), dtype=bool) for s in (None, *MERGES)}
    for sim, idx, texts, stories in batches:
        sketches = {aid: sim.sketch(a.title, a.body, a.language) for aid, a in texts.items()}
        lo, against = pair_tables(
            list(texts), lambda a, b, sim=sim, sketches=sketches: sim.score(sketches[a],
                                                                           sketches[b]),
            {aid: event_marks(a.title, a.body, a.language) for aid, a in texts.items()},
            {aid: named(a.title, a.body) for aid, a in texts.items()})
        pred = {aid: stories.get(aid, aid) for aid in texts}
        for setting in same:
            merged = pred if setting is None else average_linkage(
                pred, lo, _logit(sim.threshold) - setting[0], against, setting[1], setting[2])
            for i in idx:
                a, b = bs.text_id(rows[i]["text1"]), bs.text_id(rows[i]["text2"])
                same[setting][i] = merged[a] == merged[b]
    for setting, pred_same in same.items():
        label = "the stage" if setting is None else merge_setting(setting)
        print(pair_line(label, pred_same, gold, cross, hard))


def run_gaps(name: str) -> None:
    rows = read_set(name)
    gold = {r["id"]: r["event"] for r in rows}
    sim = MultilingualSimilarity()
    sketches, times, marks, names = set_features(rows, sim)
    found = []
    for a, b in itertools.combinations(sorted(sketches), 2):
        raw = sim.score(sketches[a], sketches[b])
        late = later_by(raw, abs(times[a] - times[b]))
        if raw >= sim.threshold > late:
            found.append((gold[a] == gold[b], a, b, raw, late,
                          names_against(marks[a], names[a], marks[b], names[b]),
                          abs(times[a] - times[b]) / 3.6e9))
    print(f"{name}.jsonl: {len(found)} pairs under the threshold only for the publication "
          f"gap, {sum(f[0] for f in found)} of one event")
    for same_event, a, b, raw, late, against, hours in found:
        print(f"  {'same ' if same_event else 'other'} {a} / {b}: {raw:.2f} -> {late:.2f} "
              f"({hours:.0f} h apart), names against {against:.2f}")


def with_guard(pairs: int, run):
    """``run()`` with the stand-out guard set to ``pairs`` compared pairs, then restored
    (the module constant is read by the stage's DoFns, which the FnApiRunner of
    :func:`bench_stories.assign_stories` runs in this process)."""
    from transforms.stories import neighbourhood

    kept = neighbourhood.STAND_OUT_PAIRS
    neighbourhood.STAND_OUT_PAIRS = pairs
    try:
        return run()
    finally:
        neighbourhood.STAND_OUT_PAIRS = kept


def guard_line(joined: bool, label: str, a, b) -> str:
    against = names_against(event_marks(a.title, a.body, a.language), named(a.title, a.body),
                            event_marks(b.title, b.body, b.language), named(b.title, b.body))
    return (f"  {'joined' if joined else 'split '} {label:<5} {a.language}-{b.language} "
            f"names against {against:.2f}")


def run_guard(name: str) -> None:
    rows, gold, kept, _, _ = through_stage(name)
    _, _, free, _, _ = with_guard(0, lambda: through_stage(name))
    ids = [r["id"] for r in rows]
    texts = {r["id"]: bs.article(r["id"], r["title"], r["text"], r["language"], published(r))
             for r in rows}
    for label, pred in (("guard of 3 pairs (the stage)", kept), ("no guard", free)):
        p, r, f = bs.bcubed([pred[i] for i in ids], [gold[i] for i in ids])
        print(f"{name}.jsonl, {label}: BCubed P={p:.3f} R={r:.3f} F1={f:.3f}")
    for a, b in itertools.combinations(ids, 2):
        if (free[a] == free[b]) != (kept[a] == kept[b]):
            print(guard_line(free[a] == free[b], "same" if gold[a] == gold[b] else "other",
                             texts[a], texts[b]) + f"  {a} / {b}")


def run_guard_pairs() -> None:
    rows, _, gold, _, hard, kept = pairs_batches()
    free = with_guard(0, pairs_batches)[5]
    changed = Counter()
    for (_, idx, texts, s_kept), (_, _, _, s_free) in zip(kept, free, strict=True):
        for i in idx:
            a, b = bs.text_id(rows[i]["text1"]), bs.text_id(rows[i]["text2"])
            now, before = s_free.get(a, a) == s_free.get(b, b), s_kept.get(a, a) == s_kept.get(b, b)
            if now != before:
                label = "hard" if hard[i] else "same" if gold[i] else "other"
                changed[label, now] += 1
                print(guard_line(now, label, texts[a], texts[b]))
    print("pairs whose decision the guard changes (label, joined without it): "
          + ", ".join(f"{k[0]} {'joined' if k[1] else 'split'} {v}"
                      for k, v in sorted(changed.items())))


def run_singletons(name: str) -> None:
    rows, gold, pred, sim, took = through_stage(name)
    vecs = {r["id"]: unit_vector(sim.sketch(r["title"], r["text"], r["language"]).vector)
            for r in rows}
    moves = centroid_moves(pred, vecs, {r["id"]: r["language"] for r in rows},
                           {r["id"]: to_micros(published(r)) for r in rows})
    lead_event = {label: gold[aid] for aid, label in reversed(pred.items())}
    ids = [r["id"] for r in rows]
    golds = [gold[i] for i in ids]
    p, r, f = bs.bcubed([pred[i] for i in ids], golds)
    sizes = Counter(pred.values())
    print(f"{name}.jsonl through the stage ({took:.1f} s): {len(sizes)} stories, "
          f"{sum(n == 1 for n in sizes.values())} alone; BCubed P={p:.3f} R={r:.3f} F1={f:.3f}")
    for cut in CUTS:
        moved = dict(pred)
        for cos, aid, label in moves:
            if cos >= cut:
                moved[aid] = label
        p, r, f = bs.bcubed([moved[i] for i in ids], golds)
        right = sum(cos >= cut and gold[aid] == lead_event[label] for cos, aid, label in moves)
        print(f"  cut {cut:.2f}: {sum(cos >= cut for cos, _, _ in moves)} moved ({right} to "
              f"their own event); BCubed P={p:.3f} R={r:.3f} F1={f:.3f}")


def pairs_batches():
    """The ``pairs-batch`` batches: each fold's texts through the stage with the models
    fitted on the other folds. Returns the pair rows, channels, gold, cross-language and
    hard-negative masks, and per fold (similarity, row indices, id → Article, stories)."""
    bs.need(bs.PAIRS)
    with bs.PAIRS.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    x, overall, cross, langs = bs.pair_channels("multilingual")
    x_short = bs.pair_channels("multilingual", short=True)[0]
    gold = overall <= bs.GOLD_MAX
    hard = np.array([float(r["Geography"]) <= bs.HARD_GEOGRAPHY
                     and float(r["Overall"]) >= bs.HARD_OVERALL for r in rows])
    folds = np.random.default_rng(bs.SEED).permutation(len(x)) % bs.FOLDS
    when = dt.datetime(2024, 11, 23, 9, tzinfo=dt.UTC)
    batches = []
    for k in range(bs.FOLDS):
        train, test = folds != k, folds == k
        tr_langs = [lp for lp, m in zip(langs, train, strict=True) if m]
        sim = bs.fold_similarity("multilingual",
                                 bs.fit_model(x[train], overall[train], tr_langs),
                                 bs.fit_model(x_short[train], overall[train], tr_langs))
        idx = np.flatnonzero(test)
        texts = {}
        for i in idx:
            for key in ("1", "2"):
                text, lang = rows[i]["text" + key], rows[i]["lang" + key]
                aid = bs.text_id(text)
                if aid not in texts:
                    texts[aid] = bs.article(aid, *bs.split_title(text), lang, when)
        stories, _, _, _ = bs.assign_stories(list(texts.values()), sim)
        print(f"fold {k}: {len(texts)} texts through the stage", flush=True)
        batches.append((sim, idx, texts, stories))
    return rows, x, gold, cross, hard, batches


def pair_line(label: str, pred_same: np.ndarray, gold: np.ndarray, cross: np.ndarray,
              hard: np.ndarray) -> str:
    return (bs.pair_report(label, pred_same, gold, np.ones(len(gold), bool))
            + f"  cross F1 {bs.pair_report('', pred_same, gold, cross).split('F1=')[1]}"
            + f"  hard negatives joined {int(np.sum(pred_same & hard))} of {int(hard.sum())}")


def run_singletons_pairs() -> None:
    rows, x, gold, cross, hard, batches = pairs_batches()
    same = {cut: np.zeros(len(x), dtype=bool) for cut in (None, *CUTS)}
    for sim, idx, texts, stories in batches:
        vecs, lang_of = {}, {}
        for aid, a in texts.items():
            if vector := sim.sketch(a.title, a.body, a.language).vector:
                vecs[aid] = unit_vector(vector)
                lang_of[aid] = a.language
        # Articles without an encoder vector (languages it does not read) stay out.
        moves = centroid_moves({aid: stories.get(aid, aid) for aid in vecs}, vecs, lang_of)
        for cut in same:
            moved = dict(stories)
            for cos, aid, label in moves:
                if cut is not None and cos >= cut:
                    moved[aid] = label
            for i in idx:
                a, b = bs.text_id(rows[i]["text1"]), bs.text_id(rows[i]["text2"])
                same[cut][i] = moved.get(a, a) == moved.get(b, b)
    for cut, pred_same in same.items():
        print(pair_line("the stage" if cut is None else f"cut {cut:.2f}", pred_same, gold,
                        cross, hard))


def run_respell(name: str) -> None:
    rows = read_set(name)
    sim = MultilingualSimilarity()
    ruled = [sim.sketch(r["title"], r["text"], r["language"]) for r in rows]
    readings = [("stage's spelling", ruled)]
    for kind, label in (("frequency", "by frequency"), ("gloss", "English gloss")):
        if kind == "gloss" and importlib.util.find_spec(bs.GLOSS_PACKAGE) is None:
            continue  # said below
        bs.use_spelling(kind)
        try:
            readings.append((label, [sim.sketch(r["title"], r["text"], r["language"])
                                     if r["language"] in BRIDGED else s
                                     for r, s in zip(rows, ruled, strict=True)]))
        finally:
            bs.use_spelling("rules")
    times = [to_micros(published(r)) for r in rows]
    pairs = [(i, j) for i, j in itertools.permutations(range(len(rows)), 2)
             if rows[i]["language"] in BRIDGED and rows[j]["language"] not in BRIDGED]
    gold = np.array([rows[i]["event"] == rows[j]["event"] for i, j in pairs])
    print(f"{name}.jsonl: {len(pairs)} pairs of a Ukrainian article and one of another "
          f"language ({int(gold.sum())} same-event); R@P at precision "
          + ", ".join(map(str, PRECISIONS)))
    for label, sk in readings:
        cos = np.array([float(unit_vector(sk[i].vector) @ unit_vector(sk[j].vector))
                        for i, j in pairs])
        score = np.array([later_by(sim.score(sk[i], sk[j]), abs(times[i] - times[j]))
                          for i, j in pairs])
        print(row(f"cosine, {label}", gold, cos))
        print(row(f"score, {label}", gold, score)
              + f"   at the threshold: {int((score >= sim.threshold)[gold].sum())} same-event, "
              f"{int((score >= sim.threshold)[~gold].sum())} other")
    if len(readings) < 3:
        print("  (no English gloss: the dormouse-ua package is not installed; "
              ".venv/bin/pip install 'dormouse-ua>=0.6.1,<0.7')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["pairs", "stories", "singletons", "merges", "gaps",
                                           "guard", "respell"])
    parser.add_argument("--set", dest="set_name", default=None,
                        help="dev or dev2 (default: both)")
    parser.add_argument("--pairs", action="store_true",
                        help="singletons, merges, guard: in the pairs-batch batches of the "
                             "stories-dev pairs")
    args = parser.parse_args()
    if args.pairs and args.what in ("singletons", "merges", "guard"):
        {"singletons": run_singletons_pairs, "merges": run_merges_pairs,
         "guard": run_guard_pairs}[args.what]()
        return
    for name in [args.set_name] if args.set_name else DESIGN_SETS:
        {"pairs": run_pairs, "stories": run_stories, "singletons": run_singletons,
         "merges": run_merges, "gaps": run_gaps, "guard": run_guard,
         "respell": run_respell}[args.what](name)


if __name__ == "__main__":
    main()
