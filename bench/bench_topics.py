"""Accuracy and speed of the built-in topic classifier.

Reads the labelled BBC News evaluation set from the shared corpora (outside this
repository; the benchmark exits with a message when it is missing), classifies every
article exactly as the pipeline does (language from ``detect_language``, then
``TopicClassifier.classify``), and prints:

* accuracy over all articles, abstentions counted as wrong;
* coverage (share not abstained) and accuracy on the covered articles;
* per-label accuracy and where the errors went;
* classifier time per article (language detection excluded, it is timed apart).

It then classifies the non-English articles of the bundled demo corpus
(``pipelines/demo/site``) and prints one line per article with the topic a reader gave it
(``DEMO_TOPICS`` below), and the accuracy over them.

``--dev`` also scores the held-out *test* split of the hand-labelled multilingual corpus texts
(``tools/topic_labels.tsv``: all 17 topics, English, German and Russian; the encoder head is
trained on the other split only). ``--encoder`` adds the sentence-encoder head to the
lexicons (``transforms/data/topics/encoder.npz``, built by ``tools/train_topics.py
--encoder``).

The evaluation set is never used to build or tune the lexicons or the encoder head: it is
only read here.

Run::

    .venv/bin/python bench/bench_topics.py
    .venv/bin/python bench/bench_topics.py --threshold 0.4 --sweep
    .venv/bin/python bench/bench_topics.py --sweep --dev --encoder
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.extraction.language import detect_language  # noqa: E402
from transforms.topics.classify import DEFAULT_THRESHOLD, TopicClassifier  # noqa: E402

DEFAULT_CORPUS = (Path(os.environ.get("NEWSBEAM_SHARED", ROOT.parent / "shared"))
                  / "corpora" / "topics-dev" / "bbc-dev.csv")
"""In ``../shared`` beside the repository, or under ``$NEWSBEAM_SHARED``."""
LABELS = {
    "business": "economy-business-finance",
    "entertainment": "arts-culture-entertainment-media",
    "politics": "politics-government",
    "sport": "sport",
    "tech": "science-technology",
}
DEMO_SITE = ROOT / "pipelines" / "demo" / "site"
DEMO_TOPICS = {
    # Topic of each non-English demo article, given by a person reading it.
    "dniprovyi-visnyk/2024/11/knyzhkova-osin-rekord.html": "arts-culture-entertainment-media",
    "dniprovyi-visnyk/2024/11/kursk-do-inavhuratsii.html": "conflict-war-peace",
    "dniprovyi-visnyk/2024/11/rozminuvannia-poliv-kharkivshchyna.html": "conflict-war-peace",
    "dniprovyi-visnyk/2024/11/shkoly-ukryttia-ochne-navchannia.html": "education",
    "rheinblick/2024/11/chipfabrik-lausitz-baustart.html": "economy-business-finance",
    "rheinblick/2024/11/kursk-frist-amtseinfuehrung.html": "conflict-war-peace",
    "rheinblick/2024/11/nordlicht-filmfest-preise.html": "arts-culture-entertainment-media",
    "rheinblick/2024/11/sturm-weihnachtsmaerkte-rheinland.html": "weather",
    "vostochny-kurier/2024/11/belgorod-shkoly-distancionka.html": "education",
    "vostochny-kurier/2024/11/kursk-do-inauguracii.html": "conflict-war-peace",
    "vostochny-kurier/2024/11/rubl-oslab-sankcii-gazprombank.html": "economy-business-finance",
    "vostochny-kurier/2024/11/slivochnoe-maslo-podorozhalo.html": "economy-business-finance",
}


def read_corpus(path: Path) -> list[tuple[str, str, str]]:
    """(expected slug, title, body) per row; the title is the first line of the text."""
    csv.field_size_limit(10_000_000)
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            title, _, body = row["text"].strip().partition("\n")
            rows.append((LABELS[row["label"]], title.strip(), body.strip()))
    return rows


def evaluate(clf: TopicClassifier, items: list[tuple[str, str, str, str]]) -> dict:
    """Classifies (expected, title, body, language) items; returns figures and timings."""
    guesses, times = [], []
    for _expected, title, body, lang in items:
        t0 = time.perf_counter()
        guesses.append(clf.classify(title, body, lang))
        times.append(time.perf_counter() - t0)
    return {"guesses": guesses, "times": times}


def report(items, guesses, threshold: float) -> tuple[float, float, float]:
    """(accuracy counting abstentions wrong, coverage, accuracy on covered) at threshold."""
    n = len(items)
    covered = [(it[0], g) for it, g in zip(items, guesses, strict=True)
               if g.best is not None and g.confidence >= threshold]
    right = sum(1 for expected, g in covered if g.best == expected)
    return right / n, len(covered) / n, (right / len(covered) if covered else 0.0)


def demo_check(clf: TopicClassifier) -> None:
    """Prints the classifier's topic for every non-English article page of the demo site."""
    if not DEMO_SITE.is_dir():
        print("\n(demo corpus not found: skipped)")
        return
    import trafilatura

    print("\nNon-English demo articles (pipelines/demo/site):")
    print(f"  {'lang':4} {'topic':34} {'conf':>5}  {'ok':3} page")
    right = total = 0
    for page in sorted(DEMO_SITE.glob("*/*/*/*.html")):
        html = page.read_text("utf-8", errors="replace")
        doc = trafilatura.bare_extraction(html, include_comments=False, with_metadata=True)
        if doc is None:
            continue
        doc = doc.as_dict() if hasattr(doc, "as_dict") else doc
        title, body = doc.get("title") or "", doc.get("text") or ""
        lang, _ = detect_language(f"{title}\n{body}")
        if lang == "en":
            continue
        g = clf.classify(title, body, lang)
        name = str(page.relative_to(DEMO_SITE))
        expected = DEMO_TOPICS.get(name)
        ok = "?" if expected is None else ("yes" if g.topic == expected else "NO")
        right += g.topic == expected
        total += expected is not None
        print(f"  {lang:4} {g.topic or '(abstain: ' + str(g.best) + ')':34} "
              f"{g.confidence:5.2f}  {ok:3} {name}")
    if total:
        print(f"  accuracy (abstentions wrong): {right}/{total} = {right / total:.3f}")


def dev_check(clf: TopicClassifier, threshold: float, sweep: bool) -> None:
    """Scores the held-out split of the hand-labelled multilingual corpus texts."""
    sys.path.insert(0, str(ROOT / "tools"))
    from train_topics import LABELS, PAIRS, read_dev_set

    if not PAIRS.is_file() or not LABELS.is_file():
        print("\n(hand-labelled corpus texts not found: skipped)")
        return
    test = [d for d in read_dev_set() if d["split"] == "test"]
    items = [(d["topic"], "", d["text"], d["language"]) for d in test]
    result = evaluate(clf, items)
    guesses = result["guesses"]
    acc, coverage, acc_covered = report(items, guesses, threshold)
    print(f"\nHand-labelled corpus texts, held-out split ({len(items)} texts, 17 topics, "
          f"{dict(Counter(it[3] for it in items).most_common())}):")
    print(f"  threshold {threshold:.2f}: accuracy {acc:.4f}, coverage {coverage:.4f}, "
          f"accuracy on covered {acc_covered:.4f}; no abstention "
          f"{report(items, guesses, 0.0)[0]:.4f}")
    for lang in sorted({it[3] for it in items}):
        mine = [(it, g) for it, g in zip(items, guesses, strict=True) if it[3] == lang]
        print(f"    {lang}: no abstention {sum(g.best == it[0] for it, g in mine) / len(mine):.4f}"
              f" (n={len(mine)})")
    print(f"  classifier time: mean {statistics.mean(result['times']) * 1000:.2f} ms/article")
    if sweep:
        print("  threshold  accuracy  coverage  acc_covered")
        for th in (0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
            a, c, ac = report(items, guesses, th)
            print(f"  {th:9.2f}  {a:8.4f}  {c:8.4f}  {ac:11.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help=f"Labelled CSV (id,label,text). Default: {DEFAULT_CORPUS}.")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"Confidence threshold. Default: {DEFAULT_THRESHOLD}.")
    parser.add_argument("--sweep", action="store_true",
                        help="Also print figures for a range of thresholds. Default: off.")
    parser.add_argument("--encoder", action="store_true",
                        help="Add the sentence-encoder head to the lexicons. Default: "
                             "lexicons alone.")
    parser.add_argument("--dev", action="store_true",
                        help="Also score the held-out hand-labelled corpus texts. Default: off.")
    parser.add_argument("--no-demo", action="store_true",
                        help="Skip the demo-corpus check. Default: run it.")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        print(f"bench_topics: evaluation corpus not found at {args.corpus}; it lives in the "
              "shared corpora beside the repository (see ../shared/README.md).",
              file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    clf = TopicClassifier.load(threshold=args.threshold, use_encoder=args.encoder)
    load_s = time.perf_counter() - t0
    rows = read_corpus(args.corpus)
    t0 = time.perf_counter()
    items = [(exp, title, body, detect_language(f"{title}\n{body}")[0])
             for exp, title, body in rows]
    langdetect_ms = (time.perf_counter() - t0) * 1000 / len(rows)
    languages = Counter(it[3] for it in items)

    result = evaluate(clf, items)
    guesses, times = result["guesses"], result["times"]
    acc, coverage, acc_covered = report(items, guesses, args.threshold)

    print(f"Corpus: {args.corpus} ({len(rows)} articles; detected languages "
          f"{dict(languages.most_common())})")
    head = clf.encoder_head()
    print(f"Classifier load: {load_s:.1f} s (4 lexicons"
          + (", sentence encoder" if head else "") + ", once per worker); "
          + "encoder head: " + (f"blended at weight {head.blend} (other languages "
                                f"{head.blend_other})" if head else "off"))
    print(f"Threshold {args.threshold:.2f}:")
    print(f"  accuracy, abstentions counted wrong: {acc:.4f}")
    print(f"  coverage (not abstained):            {coverage:.4f}")
    print(f"  accuracy on covered articles:        {acc_covered:.4f}")
    print(f"  classifier time: mean {statistics.mean(times) * 1000:.2f} ms/article, "
          f"p95 {sorted(times)[int(0.95 * len(times))] * 1000:.2f} ms "
          f"(language detection apart: {langdetect_ms:.2f} ms/article); "
          f"{len(times) / sum(times):.0f} articles/s on one core")

    print("\nPer label (accuracy, abstentions wrong) and where the others went:")
    for slug in LABELS.values():
        mine = [(it, g) for it, g in zip(items, guesses, strict=True) if it[0] == slug]
        outcome = Counter(
            ("(abstain)" if g.confidence < args.threshold else g.best) for _it, g in mine)
        right = outcome.pop(slug, 0)
        others = ", ".join(f"{k} {v}" for k, v in outcome.most_common(4))
        print(f"  {slug:34} {right / len(mine):.3f} (n={len(mine)}) {others}")

    if args.sweep:
        print("\nThreshold sweep (reported only; the default was not chosen on this set):")
        print("  threshold  accuracy  coverage  acc_covered")
        for th in (0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6):
            a, c, ac = report(items, guesses, th)
            print(f"  {th:9.2f}  {a:8.4f}  {c:8.4f}  {ac:11.4f}")

    if not args.no_demo:
        demo_check(clf)
    if args.dev:
        dev_check(clf, args.threshold, args.sweep)
    print(f"\nReproduce: .venv/bin/python bench/bench_topics.py --threshold {args.threshold}"
          + "".join(f" --{flag}" for flag in ("sweep", "dev", "encoder")
                    if getattr(args, flag)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
