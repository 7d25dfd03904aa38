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

``singletons`` tries the best of them on the stage's own stories: the set goes through the
real :class:`~transforms.stories.stage.AssignStories` (FnApiRunner, one batch), then each
article left alone moves to the story of 2+ members within two days whose other-language
centroid is nearest, when that cosine reaches a cut; BCubed before and for each cut.
``singletons --pairs`` does the same in the batches of ``bench_stories.py pairs-batch`` (each
fold of the stories-dev pairs through the stage with models fitted on the other folds;
needs ``../shared``) and prints pair F1 and the hard negatives joined, for each cut.

Run (the encoder ships in the package; ``centred-shrunk`` also reads ``../shared``)::

    .venv/bin/python bench/bench_story_signals.py pairs [--set dev|dev2]
    .venv/bin/python bench/bench_story_signals.py stories [--set dev|dev2]
    .venv/bin/python bench/bench_story_signals.py singletons [--set dev|dev2 | --pairs]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
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
from transforms.stories.similarity import (  # noqa: E402
    BRIDGED,
    ENCODER_LANGUAGES,
    MultilingualSimilarity,
    encode_meaning,
    meaning_text,
    quantize,
    unit_vector,
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


def run_singletons(name: str) -> None:
    rows = read_set(name)
    gold = {r["id"]: r["event"] for r in rows}
    articles = [bs.article(r["id"], r["title"], r["text"], r["language"], published(r))
                for r in rows]
    stories, _, took, sim = bs.assign_stories(articles, "multilingual")
    pred = {r["id"]: stories.get(r["id"], r["id"]) for r in rows}
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


def run_singletons_pairs() -> None:
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
    same = {cut: np.zeros(len(x), dtype=bool) for cut in (None, *CUTS)}
    for k in range(bs.FOLDS):
        train, test = folds != k, folds == k
        tr_langs = [lp for lp, m in zip(langs, train, strict=True) if m]
        sim = bs.fold_similarity("multilingual",
                                 bs.fit_model(x[train], overall[train], tr_langs),
                                 bs.fit_model(x_short[train], overall[train], tr_langs))
        idx = np.flatnonzero(test)
        texts, vecs, lang_of = {}, {}, {}
        for i in idx:
            for key in ("1", "2"):
                text, lang = rows[i]["text" + key], rows[i]["lang" + key]
                aid = bs.text_id(text)
                if aid not in texts:
                    title, body = bs.split_title(text)
                    texts[aid] = bs.article(aid, title, body, lang, when)
                    lang_of[aid] = lang
                    if vector := sim.sketch(title, body, lang).vector:
                        vecs[aid] = unit_vector(vector)
        stories, _, _, _ = bs.assign_stories(list(texts.values()), sim)
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
        print(f"fold {k}: {len(texts)} texts, {len(moves)} alone with a story to move to")
    for cut, pred_same in same.items():
        label = "the stage" if cut is None else f"cut {cut:.2f}"
        print(bs.pair_report(label, pred_same, gold, np.ones(len(x), bool))
              + f"  cross F1 {bs.pair_report('', pred_same, gold, cross).split('F1=')[1]}"
              + f"  hard negatives joined {int(np.sum(pred_same & hard))} of {int(hard.sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["pairs", "stories", "singletons"])
    parser.add_argument("--set", dest="set_name", default=None,
                        help="dev or dev2 (default: both)")
    parser.add_argument("--pairs", action="store_true",
                        help="singletons: in the pairs-batch batches of the stories-dev pairs")
    args = parser.parse_args()
    if args.what == "singletons" and args.pairs:
        run_singletons_pairs()
        return
    for name in [args.set_name] if args.set_name else DESIGN_SETS:
        {"pairs": run_pairs, "stories": run_stories,
         "singletons": run_singletons}[args.what](name)


if __name__ == "__main__":
    main()
