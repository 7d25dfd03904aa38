"""Checks that the lexical sketch still gives every article the same features.

The shipped logistic models in :mod:`transforms.stories.similarity` were fitted on the features
the sketch produced when they were fitted, so a change that only makes sketching faster
must leave them byte for byte alone. This script loads ``transforms/stories/similarity.py`` as it
was at a git revision (``--base``, default ``main``), sketches the same texts with that
code and with the working tree's, and compares every field of :class:`Sketch`:

* the features the models read (``terms``, ``term_weights``, ``names``, ``name_weights``,
  ``grams``, ``gram_weights``, ``lead``, ``numbers``, ``words``, ``keys``, ``language``)
  and the bigram count ``shingles`` must be identical (exit status 1 otherwise);
* ``minhash`` is reported apart: a change of its hashing shows up there;
* for all pairs among the first ``--pairs`` texts, the model inputs
  (:meth:`LexicalSimilarity.features`), the score and the near-copy decision must be
  identical too (they use the faster comparison code of the working tree).

Texts: hand-written edge cases (scripts, CJK, numbers, words cut at the lead and length
limits, compatibility characters, empty parts) and, when ``../shared/corpora/`` is
present, the articles of ``bench/bench_dedup_cost.py``. Run::

    .venv/bin/python tools/check_sketch_parity.py [--base main] [--n 2000]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.stories import similarity as current  # noqa: E402

FEATURE_FIELDS = ("language", "terms", "term_weights", "names", "name_weights", "grams",
                  "gram_weights", "lead", "numbers", "words", "keys", "shingles")

LEAD_CUT = "x" * (current.LEAD_CHARS - 4) + " Zelenskyy met Trump"
EDGE_CASES = [
    ("Parliament passes railway budget",
     "Lawmakers approved the railway budget on Monday, 3 March 2025: 1,200 km of track "
     "and 40 bridges for 07 regions.", "en"),
    ("", "", "en"),
    ("Only a title", "", "de"),
    ("", "Nur ein Text ohne Titel, mit Umlauten: Brücken, Züge, Häfen.", "de"),
    ("Зеленський зустрівся з Трампом", "Президент України Володимир Зеленський "
     "зустрівся з Дональдом Трампом у Вашингтоні 28 лютого.", "uk"),
    ("特朗普总统会见泽连斯基",
     "美国总统特朗普周五在白宫会见了乌克兰总统泽连斯基。Trump 2025年", "zh"),
    ("東京で地震", "気象庁によると、午前9時ごろ震度5弱の地震がありました。", "ja"),
    ("서울 날씨", "서울은 오늘 맑고 기온은 25도입니다.", "ko"),
    ("Mixed 北京Beijing", "Talks in 北京Beijing and Kyiv_Київ, x 1 22 333 1999 2024 0042.", "en"),
    ("Compatibility ﬁ ligatures and ① ½ Ⅻ", "Full-width ＡＢＣ１２３ and ﬀ, ˙ ́ e\u0301 "
     "café vs cafe\u0301, Å and A\u030a.", "fr"),
    ("Cut at the lead", LEAD_CUT + " in Washington. " * 5, "en"),
    ("Long body", ("Ministers debated the budget for trains and bridges. " * 420)
     + "Zelenskyy visited Kursk.", "en"),
    ("Language tags", "The minister said so on Monday.", "EN-gb"),
    ("Unknown language", "Quelque chose se passe à Paris aujourd'hui.", ""),
    ("العربية", "قال الرئيس إن الحكومة ستدعم الموازنة الجديدة للسكك الحديدية.", "ar"),
    ("Ελληνικά", "Η κυβέρνηση ενέκρινε τον προϋπολογισμό για τους σιδηροδρόμους.", "el"),
]


def load_base(revision: str):
    """``transforms/stories/similarity.py`` at ``revision``, imported as a separate module."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:transforms/stories/similarity.py"],
        check=True, capture_output=True).stdout
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("similarity_base", f.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def corpus_texts(n: int) -> list[tuple[str, str, str]]:
    """The articles of the cost benchmark, when the shared corpora are present."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_dedup_cost import BBC, PAIRS, load

    if n <= 0 or not BBC.exists() or not PAIRS.exists():
        return []
    return [(a.title, a.body, a.language) for a in load(n, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="git revision to compare with "
                        "(default main)")
    parser.add_argument("--n", type=int, default=2000,
                        help="corpus articles to add when ../shared is present (default 2000)")
    parser.add_argument("--pairs", type=int, default=250,
                        help="texts whose pairs are all scored (default 250)")
    args = parser.parse_args()
    base = load_base(args.base)
    texts = EDGE_CASES + corpus_texts(args.n)
    old_sim, new_sim = base.LexicalSimilarity(), current.LexicalSimilarity()
    differ = dict.fromkeys(FEATURE_FIELDS, 0)
    minhash_differ = 0
    sketches = []
    for title, body, language in texts:
        old = old_sim.sketch(title, body, language)
        new = new_sim.sketch(title, body, language)
        for name in FEATURE_FIELDS:
            differ[name] += getattr(old, name) != getattr(new, name)
        minhash_differ += old.minhash != new.minhash
        sketches.append((old, new))
    pairs = dict.fromkeys(("features", "score", "near"), 0)
    compared = 0
    for i, (old_a, new_a) in enumerate(sketches[:args.pairs]):
        for old_b, new_b in sketches[:i]:
            compared += 1
            pairs["features"] += (old_sim.features(old_a, old_b)
                                  != new_sim.features(new_a, new_b))
            pairs["score"] += old_sim.score(old_a, old_b) != new_sim.score(new_a, new_b)
            pairs["near"] += (base.near_duplicate(old_a, old_b)
                              != current.near_duplicate(new_a, new_b))
    print(f"texts: {len(texts)} ({len(EDGE_CASES)} edge cases), base {args.base}")
    print("features differing: " + ", ".join(f"{k}={v}" for k, v in differ.items()))
    print(f"minhash differing: {minhash_differ}")
    print(f"pairs: {compared}, differing: " + ", ".join(f"{k}={v}" for k, v in pairs.items()))
    if any(differ.values()) or pairs["features"] or pairs["score"]:
        raise SystemExit("FAIL: the sketch features or the pair scores changed")
    print("OK: the features and pair scores are identical")


if __name__ == "__main__":
    main()
