"""Trains the sentence-encoder head of the topic classifier
(``transforms/data/topics/encoder.npz``, see ``train_encoder``).

A softmax layer over USE multilingual embeddings, learned from labelled text that is not
the evaluation set (``bench/bench_topics.py`` on BBC News is the evaluation; nothing here
reads it):

* the hand-labelled texts of ``tools/topic_labels.tsv`` (multilingual, all 17 topics), only
  those of the *train* split: the texts are grouped by the pairs they appear in, and whole
  groups go to the *test* split (about 40 %, by a hash of the group), which
  ``bench/bench_topics.py --dev`` uses for held-out figures;
* the short texts written for this project in ``tools/topic_examples.yaml`` (en/de/uk/ru);
* English headlines of ``stories-dev/headline-stories-dev.csv`` with publisher categories
  (business, entertainment, science and technology, health; at most 15 per story).

The regularisation and the blending weights with the lexicons (one for texts in a lexicon
language, one for the others) are chosen by 5-fold cross validation over the train split
(folds by group). Run::

    .venv/bin/python tools/train_topics.py            # writes encoder.npz
    .venv/bin/python tools/train_topics.py --dry-run  # prints the figures only

(``--encoder``, which chose this head over a Naive Bayes model that never shipped, is
still accepted.)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.topics.classify import (  # noqa: E402
    SUPPORTED_LANGUAGES,
    TopicClassifier,
)
from transforms.topics.taxonomy import MEDIA_TOPICS  # noqa: E402

SHARED = Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared")) / "corpora"
"""``../shared/corpora`` beside the repository, or ``$NEWSBEAM_SHARED/corpora``."""
PAIRS = SHARED / "stories-dev" / "article-pairs-dev.csv"
HEADLINES = SHARED / "stories-dev" / "headline-stories-dev.csv"
ENCODER_OUT = ROOT / "transforms" / "data" / "topics" / "encoder.npz"
LABELS = ROOT / "tools" / "topic_labels.tsv"
EXAMPLES = ROOT / "tools" / "topic_examples.yaml"
TOPICS = tuple(sorted(MEDIA_TOPICS))
HEADLINE_LABELS = {"b": "economy-business-finance", "e": "arts-culture-entertainment-media",
                   "t": "science-technology", "m": "health"}


def text_id(text: str) -> str:
    """The key of a corpus text in ``tools/topic_labels.tsv``."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def read_dev_set(pairs_path: Path = PAIRS, labels_path: Path = LABELS) -> list[dict]:
    """The hand-labelled corpus texts: dicts with id, language, text, topic, group, split.

    A group is a set of texts joined by the pairs they appear in (the same story told twice
    must not sit on both sides of a split); a group is in the ``test`` split when the hash of
    its first text id falls in 2 of 5 buckets, else in ``train``.
    """
    csv.field_size_limit(10_000_000)
    labels = {}
    for line in labels_path.read_text("utf-8").splitlines():
        if line and not line.startswith("#") and not line.startswith("sha1_12"):
            key, lang, topic = line.split("\t")
            if topic not in MEDIA_TOPICS:
                raise ValueError(f"{labels_path}: unknown topic {topic!r}")
            labels[key] = (lang, topic)
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    texts: dict[str, str] = {}
    with pairs_path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            a, b = text_id(row["text1"]), text_id(row["text2"])
            texts.setdefault(a, row["text1"])
            texts.setdefault(b, row["text2"])
            parent[root(a)] = root(b)
    members: dict[str, list[str]] = {}
    for key in texts:
        members.setdefault(root(key), []).append(key)
    out = []
    for keys in members.values():
        group = min(keys)
        split = "test" if int(hashlib.sha1(group.encode()).hexdigest(), 16) % 5 < 2 else "train"
        for key in keys:
            if key in labels:
                lang, topic = labels[key]
                out.append({"id": key, "language": lang, "text": texts[key], "topic": topic,
                            "group": group, "split": split})
    return sorted(out, key=lambda d: d["id"])


def read_examples(path: Path = EXAMPLES) -> list[tuple[str, str, str]]:
    """(language, text, topic) for every example written in ``tools/topic_examples.yaml``."""
    import yaml

    raw = yaml.safe_load(path.read_text("utf-8"))
    out = []
    for topic, per_lang in raw.items():
        if topic not in MEDIA_TOPICS:
            raise ValueError(f"{path}: unknown topic {topic!r}")
        for lang, items in per_lang.items():
            for text in items:
                if not isinstance(text, str):
                    raise ValueError(f"{path}: {topic}/{lang}: not a plain string: {text!r}")
                out.append((lang, text, topic))
    return out


def read_headline_examples(per_story: int = 15) -> list[tuple[str, str]]:
    """(headline, topic) of the labelled headlines, at most ``per_story`` per story."""
    seen: Counter = Counter()
    out = []
    with HEADLINES.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            topic = HEADLINE_LABELS.get(row["CATEGORY"] or "")
            if topic and row["TITLE"] and seen[row["STORY"]] < per_story:
                seen[row["STORY"]] += 1
                out.append((row["TITLE"], topic))
    return out


FEATURE_SCALE = 22.0  # unit vectors of 512 dims: about unit variance per component


def softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float,
                iterations: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (weighted, L2) by full-batch Adam; deterministic."""
    n, d = x.shape
    k = len(TOPICS)
    w = weight / weight.sum()
    coef, bias = np.zeros((d, k)), np.zeros(k)
    target = np.zeros((n, k))
    target[np.arange(n), y] = 1.0
    m = [np.zeros_like(coef), np.zeros_like(bias)]
    v = [np.zeros_like(coef), np.zeros_like(bias)]
    for step in range(1, iterations + 1):
        grad_out = (softmax_rows(x @ coef + bias) - target) * w[:, None]
        grads = [x.T @ grad_out + l2 * coef, grad_out.sum(axis=0)]
        rate = 0.05 * np.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)
        for i, (param, g) in enumerate(zip((coef, bias), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            param -= rate * m[i] / (np.sqrt(v[i]) + 1e-8)
    return coef, bias


def lexicon_matrix(clf: TopicClassifier, items: list[tuple[str, str, str]]) -> np.ndarray:
    """Lexicon shares (rows: items of (language, title, body); columns: TOPICS)."""
    out = np.zeros((len(items), len(TOPICS)))
    index = {t: i for i, t in enumerate(TOPICS)}
    for row, (lang, title, body) in enumerate(items):
        for topic, share in clf.classify(title, body, lang).scores.items():
            out[row, index[topic]] = share
    return out


def train_encoder(args) -> int:
    """Fits the encoder head; prints cross-validated and held-out figures; writes the file."""
    from transforms.topics.classify import encode, encoder_text

    missing = [p for p in (PAIRS, HEADLINES) if not p.is_file()]
    if missing:
        print(f"train_topics: training corpora not found: {missing} (see ../shared/README.md)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    dev = read_dev_set()
    train = [d for d in dev if d["split"] == "train"]
    test = [d for d in dev if d["split"] == "test"]
    examples = read_examples()
    headlines = read_headline_examples()

    def embed(texts: list[str]) -> np.ndarray:
        return encode(texts).astype(np.float64) * FEATURE_SCALE

    index = {t: i for i, t in enumerate(TOPICS)}
    x_train = embed([encoder_text("", d["text"]) for d in train])
    y_train = np.array([index[d["topic"]] for d in train])
    x_extra = np.vstack([embed([encoder_text("", t) for _, t, _ in examples]),
                         embed([encoder_text(t, "") for t, _ in headlines])])
    y_extra = np.array([index[t] for *_, t in examples] + [index[t] for _, t in headlines])
    w_extra = np.array([args.example_weight] * len(examples)
                       + [args.headline_weight] * len(headlines))
    print(f"dev set: {len(train)} train / {len(test)} test texts; {len(examples)} written "
          f"examples; {len(headlines)} headlines ({time.perf_counter() - t0:.0f} s)")

    clf = TopicClassifier.load(use_encoder=False)
    lex_train = lexicon_matrix(clf, [(d["language"], "", d["text"]) for d in train])
    lex_test = lexicon_matrix(clf, [(d["language"], "", d["text"]) for d in test])

    groups = sorted({d["group"] for d in train})
    fold_of = {g: int(hashlib.sha1(g.encode()).hexdigest(), 16) % 5 for g in groups}
    folds = np.array([fold_of[d["group"]] for d in train])
    blends = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    # The lexicons are strong in their own languages and weak elsewhere, so the blending
    # weight is chosen apart for texts in a lexicon language and for all other texts.
    own = np.array([d["language"] in SUPPORTED_LANGUAGES for d in train])
    results: dict[float, list] = {}
    for l2 in args.l2:
        probs = np.zeros((len(train), len(TOPICS)))
        for fold in range(5):
            inside = folds != fold
            coef, bias = fit_softmax(np.vstack([x_train[inside], x_extra]),
                                     np.concatenate([y_train[inside], y_extra]),
                                     np.concatenate([np.ones(inside.sum()), w_extra]), l2)
            probs[~inside] = softmax_rows(x_train[~inside] @ coef + bias)
        rows = []
        for blend in blends:
            hit = ((1 - blend) * lex_train + blend * probs).argmax(axis=1) == y_train
            rows.append((blend, float(hit[own].mean()), float(hit[~own].mean())
                         if (~own).any() else 0.0))
            print(f"  cv: l2 {l2:g} blend {blend:.1f}: accuracy {rows[-1][1]:.4f} "
                  f"(lexicon languages, n={own.sum()}), {rows[-1][2]:.4f} (others, "
                  f"n={(~own).sum()})")
        results[l2] = rows

    def best(rows, column):
        return max(rows, key=lambda r: (r[column], -r[0]))

    l2 = max(results, key=lambda k: best(results[k], 1)[1] + best(results[k], 2)[2])
    blend, acc = best(results[l2], 1)[:2]
    blend_other, _, acc_other = best(results[l2], 2)
    lexicon_cv = results[l2][0][1]
    print(f"chosen by cross validation: l2 {l2:g}; blend {blend:.1f} in lexicon languages "
          f"(accuracy {acc:.4f}; lexicons alone {lexicon_cv:.4f}), {blend_other:.1f} in others "
          f"(accuracy {acc_other:.4f}; lexicons alone {results[l2][0][2]:.4f})")
    coef, bias = fit_softmax(np.vstack([x_train, x_extra]), np.concatenate([y_train, y_extra]),
                             np.concatenate([np.ones(len(train)), w_extra]), l2)
    x_test = embed([encoder_text("", d["text"]) for d in test])
    y_test = np.array([index[d["topic"]] for d in test])
    head = softmax_rows(x_test @ coef + bias)
    weight = np.array([blend if d["language"] in SUPPORTED_LANGUAGES else blend_other
                       for d in test])[:, None]
    mixed = (1 - weight) * lex_test + weight * head
    figures = [float(np.mean(m.argmax(axis=1) == y_test)) for m in (lex_test, head, mixed)]
    print(f"held-out test split ({len(test)} texts), no abstention: lexicons {figures[0]:.4f}, "
          f"encoder head {figures[1]:.4f}, blend {figures[2]:.4f}")
    if args.dry_run:
        return 0
    meta = {"topics": list(TOPICS), "blend": blend, "blend_other_languages": blend_other,
            "l2": l2, "cv_accuracy": round(acc, 4),
            "cv_accuracy_lexicons": round(lexicon_cv, 4), "trained_on": {
                "labelled_texts": len(train), "examples": len(examples),
                "headlines": len(headlines)},
            "example_weight": args.example_weight, "headline_weight": args.headline_weight}
    buf = io.BytesIO()
    # The runtime multiplies unit vectors by the weights: fold the feature scale in.
    np.savez_compressed(buf, weights=(coef * FEATURE_SCALE).astype(np.float32),
                        bias=bias.astype(np.float32), meta=np.array(json.dumps(meta)))
    args.encoder_out.write_bytes(buf.getvalue())
    print(f"wrote {args.encoder_out} ({len(buf.getvalue()) / 1e3:.0f} kB): {meta}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="Do not write the head.")
    parser.add_argument("--encoder", action="store_true",
                        help="Accepted for older commands: the encoder head is what this "
                             "tool trains.")
    parser.add_argument("--encoder-out", type=Path, default=ENCODER_OUT,
                        help=f"Encoder head file. Default: {ENCODER_OUT}.")
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-4, 1e-3],
                        help="L2 penalties tried by cross validation. Default: 1e-4 1e-3.")
    parser.add_argument("--example-weight", type=float, default=1.0,
                        help="Weight of a written example (a labelled text weighs 1). "
                             "Default: 1.0.")
    parser.add_argument("--headline-weight", type=float, default=0.3,
                        help="Weight of a labelled headline. Default: 0.3.")
    return train_encoder(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
