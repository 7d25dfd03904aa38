"""The lexical sketch's bytes are pinned: the shipped models were fitted on these features.

A change that only makes sketching faster must leave every feature alone; a change of the
MinHash signatures must be deliberate (sketches in keyed state meet new ones). The
feature digest was computed by the sketch code the models were fitted with (the MinHash
one after its bigram hashing changed); ``tools/check_sketch_parity.py`` compares any two
revisions on more texts.
"""

from __future__ import annotations

import hashlib

from transforms.stories.similarity import LexicalSimilarity, Sketch

TEXTS = [
    ("Parliament passes railway budget",
     "Lawmakers approved the railway budget on Monday, 3 March 2025: 1,200 km of track and "
     "40 bridges for 07 regions. The transport minister said the money pays for faster "
     "trains to the northern ports.", "en"),
    ("Parlament beschließt Bahnhaushalt",
     "Die Abgeordneten haben am Montag den Bahnhaushalt gebilligt. Der Verkehrsminister "
     "sagte, das Geld bezahle schnellere Züge zu den Häfen im Norden.", "de"),
    ("Зеленський зустрівся з Трампом",
     "Президент Володимир Зеленський зустрівся з Дональдом Трампом у Вашингтоні.", "uk"),
    ("特朗普总统会见泽连斯基",
     "美国总统特朗普周五在白宫会见了乌克兰总统泽连斯基。Trump 2025年", "zh"),
    ("Cut at the lead", "x" * 496 + " Zelenskyy met Trump in Washington." * 6, "en"),
    ("Compatibility ﬁ ligatures", "Full-width ＡＢＣ１２３ and café vs cafe\u0301.", "fr"),
    ("", "", "en"),
    ("Long body", "Ministers debated the budget for trains and bridges. " * 420, "EN-gb"),
]
FEATURES = ("language", "terms", "term_weights", "names", "name_weights", "grams",
            "gram_weights", "lead", "numbers", "words", "keys", "shingles")


def _digest(sketches: list[Sketch], names: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for s in sketches:
        for name in names:
            h.update(repr(getattr(s, name)).encode())
    return h.hexdigest()[:16]


def test_sketch_features_and_minhash_are_pinned():
    sim = LexicalSimilarity()
    sketches = [sim.sketch(*t) for t in TEXTS]
    assert _digest(sketches, FEATURES) == "a09b70619bf0ae1e"
    assert _digest(sketches, ("minhash",)) == "f508a6f1edff1716"
