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
(``pipelines/demo/site``) and prints one line per article, for a reader to check.

The evaluation set is never used to build or tune the lexicons: it is only read here.

Run::

    .venv/bin/python bench/bench_topics.py
    .venv/bin/python bench/bench_topics.py --threshold 0.4 --sweep
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.classify import DEFAULT_THRESHOLD, TopicClassifier  # noqa: E402
from transforms.language import detect_language  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpora" / "topics-dev" / "bbc-dev.csv"
LABELS = {
    "business": "economy-business-finance",
    "entertainment": "arts-culture-entertainment-media",
    "politics": "politics-government",
    "sport": "sport",
    "tech": "science-technology",
}
DEMO_SITE = ROOT / "pipelines" / "demo" / "site"


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
    print(f"  {'lang':4} {'topic':34} {'conf':>5}  page")
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
        print(f"  {lang:4} {g.topic or '(abstain: ' + str(g.best) + ')':34} "
              f"{g.confidence:5.2f}  {page.relative_to(DEMO_SITE)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help=f"Labelled CSV (id,label,text). Default: {DEFAULT_CORPUS}.")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"Confidence threshold. Default: {DEFAULT_THRESHOLD}.")
    parser.add_argument("--sweep", action="store_true",
                        help="Also print figures for a range of thresholds. Default: off.")
    parser.add_argument("--no-demo", action="store_true",
                        help="Skip the demo-corpus check. Default: run it.")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        print(f"bench_topics: evaluation corpus not found at {args.corpus}; it lives in the "
              "shared corpora beside the repository (see ../shared/README.md).",
              file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    clf = TopicClassifier.load(threshold=args.threshold)
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
    models, weight = clf.models()
    print(f"Classifier load: {load_s:.1f} s (4 lexicons, once per worker); learned model: "
          + (f"{sorted(models)} blended at weight {weight}" if models else "none (lexicons only)"))
    print(f"Threshold {args.threshold:.2f}:")
    print(f"  accuracy, abstentions counted wrong: {acc:.4f}")
    print(f"  coverage (not abstained):            {coverage:.4f}")
    print(f"  accuracy on covered articles:        {acc_covered:.4f}")
    print(f"  classifier time: mean {statistics.mean(times) * 1000:.2f} ms/article, "
          f"p95 {sorted(times)[int(0.95 * len(times))] * 1000:.2f} ms "
          f"(language detection apart: {langdetect_ms:.2f} ms/article)")

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
    print(f"\nReproduce: .venv/bin/python bench/bench_topics.py --threshold {args.threshold}"
          + (" --sweep" if args.sweep else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
