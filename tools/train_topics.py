"""Trains the topic model that ships beside the lexicons (``transforms/data/topics/model.npz``).

Self-training, with no hand-labelled articles and never the evaluation set:

1. read unlabelled news text from the shared corpora beside the repository (read-only,
   outside the repo; the script exits with a message when they are missing):
   the article texts of ``stories-dev/article-pairs-dev.csv`` and the pages of
   ``extraction-eval/pages.tar.xz`` (text extracted with trafilatura, language detected);
2. label each text with the lexicon classifier where it is confident (``--min-confidence``);
3. fit a multinomial Naive Bayes model per language on lemma unigrams and bigrams
   (Laplace smoothing, the ``--vocabulary`` most frequent features kept);
4. label the texts again with lexicon + model and fit once more (one self-training round);
5. choose the blending weight and the sharpness on a held-out set with human labels that
   is not the evaluation set: the English headlines of ``stories-dev/headline-stories-dev.csv``
   (publisher categories b/e/t/m → economy / arts / science-technology / health). Half of
   those stories (split by story id) are also added to the training data; the other half is
   only used for this choice.

``bench/bench_topics.py`` (BBC News) is the evaluation; nothing here reads it.

Run::

    .venv/bin/python tools/train_topics.py            # writes transforms/data/topics/model.npz
    .venv/bin/python tools/train_topics.py --dry-run  # prints the figures, writes nothing
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.classify import (  # noqa: E402
    TITLE_WEIGHT,
    TopicClassifier,
    TopicModel,
    model_features,
)
from transforms.language import detect_language  # noqa: E402
from transforms.topics import MEDIA_TOPICS  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpora"
PAIRS = SHARED / "stories-dev" / "article-pairs-dev.csv"
HEADLINES = SHARED / "stories-dev" / "headline-stories-dev.csv"
PAGES = SHARED / "extraction-eval" / "pages.tar.xz"
OUT = ROOT / "transforms" / "data" / "topics" / "model.npz"
TOPICS = tuple(sorted(MEDIA_TOPICS))
HEADLINE_LABELS = {"b": "economy-business-finance", "e": "arts-culture-entertainment-media",
                   "t": "science-technology", "m": "health"}
SCALE = 0.0005  # log-probabilities are stored as int16 steps of this size
MIN_DOCS = 300  # a language needs this many training texts to get a model


def read_pairs() -> list[tuple[str, str, str]]:
    """(language, title, body) for each distinct article text of the pairs file."""
    csv.field_size_limit(10_000_000)
    seen, out = set(), []
    with PAIRS.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            for lang, text in ((row["lang1"], row["text1"]), (row["lang2"], row["text2"])):
                key = hashlib.sha1(text.encode()).digest()
                if text.strip() and key not in seen:
                    seen.add(key)
                    out.append((lang, "", text))
    return out


def read_pages(cache: Path | None) -> list[tuple[str, str, str]]:
    """(language, title, body) extracted from the evaluation pages (cached as JSON lines)."""
    if cache and cache.is_file():
        return [tuple(json.loads(line)) for line in cache.open(encoding="utf-8")]
    import trafilatura

    out = []
    with tarfile.open(PAGES) as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".html"):
                continue
            html = tar.extractfile(member).read().decode("utf-8", errors="replace")
            doc = trafilatura.bare_extraction(html, include_comments=False, with_metadata=True)
            if doc is None:
                continue
            doc = doc.as_dict() if hasattr(doc, "as_dict") else doc
            title, body = doc.get("title") or "", doc.get("text") or ""
            if len(body) < 300:
                continue
            lang, _ = detect_language(f"{title}\n{body}")
            out.append((lang, title, body))
    if cache:
        with cache.open("w", encoding="utf-8") as f:
            for item in out:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return out


def read_headlines() -> tuple[list, list]:
    """Labelled English headlines split in two halves by story id: (train, held out)."""
    train, held = [], []
    with HEADLINES.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            label = HEADLINE_LABELS.get(row["CATEGORY"] or "")
            if not label or not row["TITLE"]:
                continue
            half = hashlib.sha1(row["STORY"].encode()).digest()[0] % 2
            (held if half else train).append(("en", row["TITLE"], "", label))
    return train, held


def doc_features(clf: TopicClassifier, lang: str, title: list[str], body: list[str],
                 stop: frozenset[str]) -> Counter:
    feats = model_features(title, stop, TITLE_WEIGHT)
    return model_features(body, stop, 1.0, feats)


def fit(docs: list[tuple[Counter, str]], stop: frozenset[str], lang: str, size: int,
        alpha: float, sharpness: float) -> TopicModel:
    """Multinomial Naive Bayes on (features, topic) pairs with log-damped counts."""
    df = Counter()
    for feats, _ in docs:
        df.update(feats.keys())
    vocab = [f for f, n in df.most_common() if n >= 2][:size]
    index = {f: i for i, f in enumerate(vocab)}
    t_index = {t: i for i, t in enumerate(TOPICS)}
    counts = np.zeros((len(vocab), len(TOPICS)))
    for feats, topic in docs:
        k = t_index[topic]
        for f, n in feats.items():
            i = index.get(f)
            if i is not None:
                counts[i, k] += 1.0 + np.log(n) if n > 1 else n
    log_prob = np.log((counts + alpha) / (counts.sum(axis=0) + alpha * len(vocab)))
    # A flat prior: the topic mix of these corpora (many tech and business headlines) says
    # nothing about the mix of the feeds a user reads.
    log_prior = np.full(len(TOPICS), -np.log(len(TOPICS)))
    return TopicModel(lang, TOPICS, log_prior, log_prob, index, stop, sharpness)


def accuracy(clf: TopicClassifier, items, threshold: float) -> tuple[float, float]:
    """(accuracy with abstentions wrong, coverage) of ``clf`` on labelled lemma items."""
    right = covered = 0
    for lang, tl, bl, label in items:
        ev = clf._scores(lang, tl, bl)
        if not ev:
            continue
        shares = clf.blend(lang, ev, tl, bl)
        top = max(shares, key=lambda t: (shares[t], t))
        if shares[top] >= threshold:
            covered += 1
            right += top == label
    return right / len(items), covered / len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-confidence", type=float, default=0.45,
                        help="Lexicon confidence needed to use a text for training. Default: 0.45.")
    parser.add_argument("--vocabulary", type=int, default=25_000,
                        help="Features kept per language. Default: 25000.")
    parser.add_argument("--alpha", type=float, default=0.2,
                        help="Laplace smoothing. Default: 0.2.")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/newsbeam-topic-pages.jsonl"),
                        help="Cache of the text extracted from the pages. "
                             "Default: /tmp/newsbeam-topic-pages.jsonl.")
    parser.add_argument("--out", type=Path, default=OUT, help=f"Model file. Default: {OUT}.")
    parser.add_argument("--dry-run", action="store_true", help="Do not write the model.")
    parser.add_argument("--force", action="store_true",
                        help="Write the model even when it does not beat the lexicons on the "
                             "held-out headlines. Default: off.")
    args = parser.parse_args(argv)
    missing = [p for p in (PAIRS, HEADLINES, PAGES) if not p.is_file()]
    if missing:
        print(f"train_topics: training corpora not found: {missing} (see ../shared/README.md)",
              file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    clf = TopicClassifier.load(use_model=False)
    texts = read_pairs() + read_pages(args.cache)
    head_train, head_held = read_headlines()
    texts = [t for t in texts if t[0] in clf.languages]
    print(f"unlabelled texts: {Counter(t[0] for t in texts)}; headlines: "
          f"{len(head_train)} train, {len(head_held)} held out "
          f"({time.perf_counter() - t0:.0f} s)")

    lemmatized = [(lang, *clf._lemmas(title, body, lang)) for lang, title, body in texts]
    labelled = [("en", *clf._lemmas(t, b, "en"), y) for _, t, b, y in head_train]
    held = [("en", *clf._lemmas(t, b, "en"), y) for _, t, b, y in head_held]
    stops = {}
    for lang in clf.languages:
        from wordfreq import top_n_list

        lex = clf.lexicon(lang)
        stops[lang] = frozenset(lex._lemma(w) for w in top_n_list(lang, 150))

    def pseudo_labels(scorer: TopicClassifier) -> list:
        out = []
        for lang, tl, bl in lemmatized:
            ev = scorer._scores(lang, tl, bl)
            if not ev:
                continue
            shares = scorer.blend(lang, ev, tl, bl)
            top = max(shares, key=lambda t: (shares[t], t))
            if shares[top] >= args.min_confidence:
                out.append((lang, tl, bl, top))
        return out

    def train(examples: list, sharpness: float) -> dict[str, TopicModel]:
        models = {}
        for lang in clf.languages:
            docs = [(doc_features(clf, lang, tl, bl, stops[lang]), y)
                    for lg, tl, bl, y in examples if lg == lang]
            if len(docs) >= MIN_DOCS:
                models[lang] = fit(docs, stops[lang], lang, args.vocabulary, args.alpha,
                                   sharpness)
        return models

    def with_models(models, weight, sharpness):
        for m in models.values():
            m.sharpness = sharpness
        scorer = TopicClassifier(clf.lexicons, threshold=clf.threshold)
        scorer._models = (models, weight)
        return scorer

    base_acc, base_cov = accuracy(clf, held, clf.threshold)
    print(f"held-out headlines, lexicon alone: accuracy {base_acc:.4f} coverage {base_cov:.4f}")
    round1 = pseudo_labels(clf)
    print(f"round 1: {len(round1)} confident texts {Counter(x[3] for x in round1).most_common()}")
    models = train(round1 + labelled, 1.0)
    weight, sharpness = 0.5, 1.0
    for rnd in (1, 2):
        grid = []
        for s in (0.5, 1.0, 2.0, 4.0):
            for w in (0.2, 0.35, 0.5, 0.65, 0.8):
                acc, cov = accuracy(with_models(models, w, s), held, clf.threshold)
                grid.append((acc, w, s, cov))
        acc, weight, sharpness, cov = max(grid)
        print(f"round {rnd}: best on held-out headlines weight {weight} sharpness {sharpness}: "
              f"accuracy {acc:.4f} coverage {cov:.4f}")
        if rnd == 1:
            round2 = pseudo_labels(with_models(models, weight, sharpness))
            print(f"round 2: {len(round2)} confident texts "
                  f"{Counter(x[3] for x in round2).most_common()}")
            models = train(round2 + labelled, sharpness)

    if args.dry_run:
        return 0
    if acc <= base_acc and not args.force:
        # Self-training only pays when the model adds something the lexicons miss; when it
        # does not beat them on held-out labels, shipping it would only move the threshold.
        print(f"not written: the blend ({acc:.4f}) does not beat the lexicon alone "
              f"({base_acc:.4f}) on held-out headlines; --force writes it anyway")
        return 1
    arrays = {}
    for lang, m in models.items():
        vocab = sorted(m.vocabulary, key=m.vocabulary.get)
        arrays[f"{lang}_vocabulary"] = np.array(vocab)
        arrays[f"{lang}_log_prior"] = m.log_prior.astype(np.float32)
        arrays[f"{lang}_log_prob"] = np.clip(np.round(m.log_prob / SCALE), -32768, 32767
                                             ).astype(np.int16)
        arrays[f"{lang}_stop"] = np.array(sorted(m.stop))
    meta = {"languages": sorted(models), "topics": list(TOPICS), "scale": SCALE,
            "model_weight": weight, "sharpness": sharpness, "alpha": args.alpha,
            "min_confidence": args.min_confidence,
            "trained_on": {lang: sum(1 for x in round2 if x[0] == lang) for lang in models}}
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    args.out.write_bytes(buf.getvalue())
    print(f"wrote {args.out} ({len(buf.getvalue()) / 1e6:.2f} MB): {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
