"""Prints the pair figures behind ``BRIDGE_OFFSET`` (``--story-similarity multilingual-uk``).

Every pair of a Ukrainian article and one of another language in the design week sets
(``tests/fixtures/stories/dev.jsonl`` and ``dev2.jsonl``; the reported ``test.jsonl`` is not
read) is scored one by one, as :class:`~transforms.stories.similarity.MultilingualSimilarity`
scores it with the Ukrainian text respelled as Russian, for a range of offsets; a pair is
"same story" at the stage's threshold. Precision, recall and F1 against the sets' events are
printed per set, beside the lexical model alone (the default for Ukrainian). Run (about a
minute; ``--spelling frequency|gloss`` reads Ukrainian as ``bench/bench_stories.py
--spelling`` does)::

    .venv/bin/python tools/fit_bridge_offset.py [--spelling rules|frequency|gloss]
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.stories import similarity  # noqa: E402
from transforms.stories.similarity import (  # noqa: E402
    BRIDGED,
    SHORT_WORDS,
    MultilingualSimilarity,
    language_pair,
)

WEEKS = ("dev", "dev2")
OFFSETS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def pairs(name: str, sim: MultilingualSimilarity) -> list[tuple[float, float, bool, bool]]:
    """(lexical score, multilingual log-odds, both long, same event) per scored pair."""
    path = ROOT / "tests" / "fixtures" / "stories" / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    sketches = [sim.sketch(r["title"], r["text"], r["language"]) for r in rows]
    # Ukrainian without its vector: scored by the lexical model, as before the respelling.
    bare = [replace(s, vector=b"") if s.language in BRIDGED else s for s in sketches]
    out = []
    for i, j in itertools.combinations(range(len(rows)), 2):
        a, b = sketches[i], sketches[j]
        if a.language == b.language or not ({a.language, b.language} & BRIDGED):
            continue
        z = sim.model.logit(sim.features(a, b), language_pair(a.language, b.language))
        out.append((sim.score(bare[i], bare[j]), z, min(a.words, b.words) >= SHORT_WORDS,
                    rows[i]["event"] == rows[j]["event"]))
    return out


def figures(predicted: list[bool], same: list[bool]) -> str:
    tp = sum(p and s for p, s in zip(predicted, same, strict=True))
    p = tp / max(sum(predicted), 1)
    r = tp / max(sum(same), 1)
    return f"P {p:.3f} R {r:.3f} F1 {2 * p * r / max(p + r, 1e-9):.3f} ({sum(predicted)} joined)"


def main() -> None:
    if "--spelling" in sys.argv[1:]:
        # What the encoder reads of Ukrainian, as bench/bench_stories.py --spelling sets it.
        sys.path.insert(0, str(ROOT / "bench"))
        import bench_stories

        bench_stories.use_spelling(sys.argv[sys.argv.index("--spelling") + 1])
    sim = MultilingualSimilarity(name="multilingual-uk", bridged=BRIDGED)
    t = sim.threshold
    for name in WEEKS:
        scored = pairs(name, sim)
        same = [s[3] for s in scored]
        print(f"{name}: {len(scored)} pairs of a Ukrainian article and another language, "
              f"{sum(same)} of one event")
        print(f"  lexical model alone: {figures([s[0] >= t for s in scored], same)}")
        for off in OFFSETS:
            joined = [s[0] >= t or (s[2] and similarity._sigmoid(s[1] + off) >= t)
                      for s in scored]
            mark = "  <- BRIDGE_OFFSET" if off == similarity.BRIDGE_OFFSET else ""
            print(f"  offset {off:+.2f}: {figures(joined, same)}{mark}")


if __name__ == "__main__":
    main()
