"""Pure similarity functions: tokens, skeletons, sketches, scores, near copies, backends."""

from __future__ import annotations

import json
import pickle
from importlib import resources

import numpy as np
import pytest

from transforms.stories.embedding import EmbeddingSimilarity, load_sentence_model
from transforms.stories.similarity import (
    BRIDGE_OFFSET,
    BRIDGED,
    ENCODER_LANGUAGES,
    FEATURES,
    MEANING_FEATURES,
    MODELS_FILE,
    NUM_PERM,
    SHORT_WORDS,
    VECTOR_BANDS,
    LexicalModel,
    LexicalSimilarity,
    MissingBackendError,
    MultilingualSimilarity,
    Sketch,
    containment_estimate,
    cosine,
    encode_meaning,
    jaccard_estimate,
    language_pair,
    make_similarity,
    meaning_text,
    near_duplicate,
    quantize,
    skeleton,
    story_model,
    token_features,
    tokenize,
    vector_cosine,
    word_shingles,
)
from transforms.stories.spelling import russian_spelling

SIM = LexicalSimilarity()
STORY = ("Parliament approved the new railway budget on Monday after a long debate. "
         "The transport minister said the money would pay for faster trains between the "
         "capital and the northern ports, and for repairs of 40 old bridges. Opposition "
         "members said the plan came too late for commuters who have waited for years.")
OTHER = ("The national football team lost two goals to one in Saturday's qualifier. The coach "
         "blamed tired legs after a long season and promised changes before the next match "
         "against the group leaders, which the team must win to reach the finals.")


def test_tokenize_words_and_cjk_bigrams():
    assert tokenize("Kyiv's 2024 budget, Київ!") == ["Kyiv", "2024", "budget", "Київ"]
    assert tokenize("特朗普总统") == ["特朗", "朗普", "普总", "总统"]


@pytest.mark.parametrize("spellings, expected", [
    (["Zelenskyy", "Zelensky", "Selenskyj", "Зеленський", "Зеленский"], "slnsk"),
    (["Trump", "Трамп"], "trmp"),
    (["Putin", "Путин", "Путін"], "ptn"),
    (["Kursk", "Курск"], "krsk"),
    # German digraphs, ts/tz for z and ц, a lone h for г, an initial glide.
    (["Zaporizhzhia", "Saporischschja", "Запоріжжя", "Запорожье"], "sprs"),
    (["Chernihiv", "Tschernihiw", "Чернігів", "Чернигов"], "krngv"),
    (["Merz", "Мерц"], "mrs"),
    (["Shmyhal", "Schmyhal", "Шмигаль", "Шмыгаль"], "smgl"),
    (["Yermak", "Jermak", "Єрмак", "Ермак"], "ermk"),
    (["Kharkiv", "Charkiw", "Харків", "Харьков"], "krkv"),
])
def test_name_skeletons_meet_across_scripts(spellings, expected):
    assert {skeleton(s) for s in spellings} == {expected}


def test_token_features_numbers_and_common_words():
    assert token_features("2024", "en")[1] == ""  # years identify no story
    assert token_features("45", "en")[:2] == (True, "#45")
    common = token_features("the", "en")[2]
    rare = token_features("Pokrovsk", "en")[2]
    assert common < 0.1 < 2.0 < rare


def test_sketch_is_small_deterministic_and_picklable():
    a = SIM.sketch("Railway budget passed", STORY, "en")
    b = SIM.sketch("Railway budget passed", STORY, "en")
    assert a == b
    assert pickle.loads(pickle.dumps(a)) == a
    assert a.nbytes() < 1024
    assert len(a.minhash) == 2 * NUM_PERM
    assert 0 < len(a.keys) <= 6
    assert any(k.endswith("railway") for k in a.keys)


def test_scores_rank_same_story_above_other_story():
    a = SIM.sketch("Railway budget passed", STORY, "en")
    b = SIM.sketch("MPs back money for faster trains",
                   "Lawmakers on Monday voted through a railway budget that the transport "
                   "minister says will bring faster trains to the northern ports and fix 40 "
                   "bridges, while the opposition called it late.", "en")
    c = SIM.sketch("Team loses qualifier", OTHER, "en")
    assert SIM.score(a, b) >= SIM.threshold > SIM.score(a, c)
    assert SIM.score(a, b) == SIM.score(b, a)
    assert 0.0 <= SIM.score(a, c) <= 1.0


def test_cosine_of_packed_vectors():
    a = SIM.sketch("", STORY, "en")
    assert cosine(a.terms, a.term_weights, a.terms, a.term_weights) == pytest.approx(1.0,
                                                                                     abs=0.01)
    assert cosine(b"", b"", a.terms, a.term_weights) == 0.0


def test_near_duplicates_of_edited_copies_but_not_of_other_texts():
    a = SIM.sketch("", STORY, "en")
    edited = (STORY.replace("Monday", "Monday evening").replace("faster", "quicker")
              + " Read more: subscribe to our daily newsletter.")
    b = SIM.sketch("", edited, "en")
    c = SIM.sketch("", OTHER, "en")
    assert jaccard_estimate(a, b) > 0.5
    assert containment_estimate(a, b) > 0.7
    assert near_duplicate(a, b) is not None
    assert near_duplicate(a, c) is None
    short = SIM.sketch("Railway budget passed", "", "en")
    assert near_duplicate(short, short) is None  # titles alone are never called copies


def test_word_shingles():
    assert word_shingles("Rail way. Train") == {"rail way", "way train"}
    assert word_shingles("one") == {"one"}


def _features(**kw):
    values = dict.fromkeys(FEATURES, 0.0) | kw
    return [values[n] for n in FEATURES]


def test_shipped_models_follow_the_similarities_features():
    # Every entry of the data file loads, and its weights follow the features of the
    # similarity that scores with it.
    data = json.loads(resources.files("transforms").joinpath("data", MODELS_FILE)
                      .read_text(encoding="utf-8"))["models"]
    assert data["lexical"]["features"] == list(FEATURES)
    assert data["multilingual"]["features"] == list(MEANING_FEATURES)
    assert data["short"]["features"] == list(MEANING_FEATURES)
    for name, entry in data.items():
        m = story_model(name)
        assert isinstance(m, LexicalModel)
        assert len(m.weights) == len(entry["features"])
        assert 0.0 < m.threshold < 1.0
        assert dict(m.pair_offsets).keys() == entry["pair_offsets"].keys()
        assert "bench/bench_stories.py pairs --fit" in entry["fitted_by"]
    assert LexicalSimilarity().model is story_model("lexical")
    multi = MultilingualSimilarity(encode=lambda texts: np.zeros((len(texts), 512)))
    assert multi.model is story_model("multilingual")
    assert multi.lexical_model is story_model("lexical")
    assert multi.short_model is story_model("short")
    with pytest.raises(ValueError, match="no story model 'nope'"):
        story_model("nope")


def test_lexical_model_probability_is_monotonic():
    m = story_model("lexical")
    assert len(m.weights) == len(FEATURES)
    for channel in ("term", "name", "gram", "lead", "number"):
        assert m.probability(_features(**{channel: 0.2})) < m.probability(
            _features(**{channel: 0.6}))
    cross = _features(cross=1.0, term=0.3, cross_term=0.3)
    assert m.probability(cross, "de-en") != m.probability(cross, "xx-yy")


def test_language_pair_is_order_free():
    assert language_pair("en", "de") == language_pair("de", "en") == "de-en"


def test_features_see_names_and_inflections_across_languages():
    en = SIM.sketch("Zelenskyy says Kursk troops will hold until January",
                    "Ukrainian forces in the Kursk region will stay until Trump's "
                    "inauguration on 20 January, President Zelenskyy said.", "en")
    de = SIM.sketch("Selenskyj: Truppen in Kursk bleiben bis Januar",
                    "Die ukrainischen Truppen in der Region Kursk bleiben bis zur "
                    "Amtseinführung von Trump am 20. Januar, sagte Präsident Selenskyj.", "de")
    other = SIM.sketch("Team loses qualifier", OTHER, "en")
    f = dict(zip(FEATURES, SIM.features(en, de), strict=True))
    g = dict(zip(FEATURES, SIM.features(en, other), strict=True))
    assert f["cross"] == 1.0 and g["cross"] == 0.0
    for channel in ("name", "gram", "number"):
        assert f[channel] > g[channel]
    assert SIM.score(en, de) >= SIM.threshold > SIM.score(en, other)


def test_embedding_backend_joins_any_encoder():
    # The packaged multilingual encoder plugged in as the "other model" of the wrapper.
    sim = EmbeddingSimilarity(encode=encode_meaning, weight=0.5)
    a = sim.sketch("Railway budget passed", STORY, "en")
    b = sim.sketch("Parliament backs rail spending", STORY.replace("Monday", "Tuesday"), "en")
    c = sim.sketch("Team loses qualifier", OTHER, "en")
    assert isinstance(a, Sketch) and len(a.vector) == 512
    assert sim.score(a, b) > sim.score(a, c)


MULTI = MultilingualSimilarity()
ECHO = {
    "en": ("Parliament passes railway budget",
           "Lawmakers approved the railway budget on Monday. The transport minister said the "
           "money pays for faster trains to the northern ports and for repairing old bridges."),
    "de": ("Parlament beschließt Bahnhaushalt",
           "Die Abgeordneten haben am Montag den Bahnhaushalt gebilligt. Der Verkehrsminister "
           "sagte, das Geld bezahle schnellere Züge zu den Häfen im Norden und die Reparatur "
           "alter Brücken."),
    "ru": ("Парламент принял железнодорожный бюджет",
           "Депутаты в понедельник одобрили бюджет железных дорог. Министр транспорта сказал, "
           "что деньги пойдут на более быстрые поезда к северным портам и ремонт старых "
           "мостов."),
}
SPORT_DE = ("Nationalelf verliert Qualifikationsspiel",
            "Die Nationalmannschaft hat am Samstag ihr Qualifikationsspiel mit eins zu zwei "
            "verloren. Der Trainer sprach von müden Beinen nach einer langen Saison.")


def test_multilingual_encoder_is_packaged_and_normalised():
    v = encode_meaning(["Parliament passes railway budget", ""])
    assert v.shape == (2, 512) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    # Sketches encode one text per call, which repeats bit for bit.
    once = encode_meaning(["Parliament passes railway budget"])
    assert np.array_equal(once, encode_meaning(["Parliament passes railway budget"]))
    assert np.allclose(once[0], v[0], atol=1e-5)


def test_quantised_vectors_keep_the_cosine():
    v = encode_meaning([t for t, _ in ECHO.values()] + [SPORT_DE[0]])
    for i in range(len(v)):
        assert len(quantize(v[i])) == 256
        for j in range(len(v)):
            assert abs(vector_cosine(quantize(v[i]), quantize(v[j])) - float(v[i] @ v[j])) < 0.03
    assert vector_cosine(b"", quantize(v[0])) == 0.0


def test_multilingual_links_echoes_across_languages_and_not_other_stories():
    sk = {lang: MULTI.sketch(t, b, lang) for lang, (t, b) in ECHO.items()}
    sport = MULTI.sketch(*SPORT_DE, "de")
    assert all(len(s.vector) == 256 for s in sk.values())
    for a, b in (("en", "de"), ("en", "ru"), ("de", "ru")):
        assert vector_cosine(sk[a].vector, sk[b].vector) > vector_cosine(sk[a].vector,
                                                                          sport.vector)
        assert MULTI.score(sk[a], sk[b]) >= MULTI.threshold, (a, b)
    for s in sk.values():
        assert MULTI.score(s, sport) < MULTI.threshold
    f = dict(zip(MEANING_FEATURES, MULTI.features(sk["en"], sk["ru"]), strict=True))
    assert f["meaning"] > 0.5 and f["cross"] == 1.0


def test_vector_keys_meet_across_languages_and_repeat():
    from transforms.stories.similarity import VECTOR_BANDS, vector_keys

    sk = {lang: MULTI.sketch(t, b, lang) for lang, (t, b) in ECHO.items()}
    sport = MULTI.sketch(*SPORT_DE, "de")
    keys = {lang: vector_keys(s.vector) for lang, s in sk.items()}
    assert all(len(k) == VECTOR_BANDS and len(set(k)) == VECTOR_BANDS for k in keys.values())
    # Appended to the lexical keys of the sketch; the same on every call.
    assert sk["en"].keys[-VECTOR_BANDS:] == keys["en"]
    assert MULTI.sketch(*ECHO["en"], "en").keys == sk["en"].keys
    # Keys hold signs of projections: the same story in three languages agrees on more
    # signs with itself than with a sports report.
    def agreeing_signs(x, y):
        return sum(8 - bin(int(p.split(":")[1], 16) ^ int(q.split(":")[1], 16)).count("1")
                   for p, q in zip(x, y, strict=True))

    sport_keys = vector_keys(sport.vector)
    for a, b in (("en", "de"), ("en", "ru"), ("de", "ru")):
        assert agreeing_signs(keys[a], keys[b]) > max(agreeing_signs(keys[a], sport_keys),
                                                      agreeing_signs(keys[b], sport_keys))
    assert vector_keys(b"") == ()


def test_multilingual_falls_back_to_lexical_outside_the_encoder_languages():
    assert "cs" not in ENCODER_LANGUAGES | BRIDGED and "en" in ENCODER_LANGUAGES
    cs = MULTI.sketch("Parlament schválil železniční rozpočet", "Poslanci v pondělí "
                      "schválili rozpočet železnic.", "cs")
    en = MULTI.sketch(*ECHO["en"], "en")
    assert cs.vector == b"" and len(en.vector) == 256
    # The lexical model decides, on the common decision point.
    lex = LexicalSimilarity()
    z_lex = lex.model.logit(lex.features(cs, en), language_pair("cs", "en"))
    p_lex = 1.0 / (1.0 + np.exp(-z_lex))
    assert (MULTI.score(cs, en) >= MULTI.threshold) == (p_lex >= lex.threshold)


def test_ukrainian_is_read_by_the_encoder_respelled_as_russian():
    from tests.test_stories import KURSK, UNRELATED

    assert russian_spelling("Зеленський заявив, що Київ і Харків") == \
        "Зеленский заявил, что Киев и Харьков"
    assert russian_spelling("об’єкт ЗСУ 20 січня, NATO") == "объект ЗСУ 20 сичня, NATO"
    assert "uk" in BRIDGED and "uk" not in ENCODER_LANGUAGES
    sim = MULTI
    assert sim.bridged == BRIDGED == make_similarity("multilingual-uk").bridged
    en = sim.sketch(*KURSK["en-soldiers"][1:], "en")
    uk = sim.sketch(*KURSK["uk"][1:], "uk")
    strike = sim.sketch(*UNRELATED["strike"][1:], "uk")
    assert len(uk.vector) == 256 and sum(k.startswith("e") for k in uk.keys) == VECTOR_BANDS
    # The vector is the encoder's reading of the respelled headline and lead.
    text = russian_spelling(meaning_text(*KURSK["uk"][1:]))
    assert uk.vector == quantize(encode_meaning([text])[0])
    # Against another language: the higher of the lexical model's score and the
    # multilingual model's, raised by the bridge offset.
    lex = LexicalSimilarity()
    shift = np.log(sim.threshold / (1 - sim.threshold)) - np.log(
        lex.threshold / (1 - lex.threshold))
    z_lex = lex.model.logit(lex.features(uk, en), language_pair("uk", "en")) + shift
    z_multi = sim.model.logit(sim.features(uk, en), language_pair("uk", "en")) + BRIDGE_OFFSET
    assert sim.score(uk, en) == pytest.approx(1.0 / (1.0 + np.exp(-max(z_lex, z_multi))))
    # The retelling joins the English story; another Ukrainian story of those days does not.
    assert sim.score(uk, en) >= sim.threshold > sim.score(strike, en)
    # Two Ukrainian articles, or a Ukrainian headline: the lexical model alone.
    z_uu = lex.model.logit(lex.features(uk, strike), language_pair("uk", "uk")) + shift
    assert sim.score(uk, strike) == pytest.approx(1.0 / (1.0 + np.exp(-z_uu)))
    head = sim.sketch(KURSK["uk"][1], "", "uk")
    z_head = lex.model.logit(lex.features(head, en), language_pair("uk", "en")) + shift
    assert sim.score(head, en) == pytest.approx(1.0 / (1.0 + np.exp(-z_head)))


def test_headlines_are_scored_by_the_headline_model():
    a = MULTI.sketch("Central bank holds rates as inflation cools", "", "en")
    b = MULTI.sketch("Bank keeps interest rate unchanged, inflation slows", "", "en")
    c = MULTI.sketch("Storm closes motorway for two days", "", "en")
    assert a.words < SHORT_WORDS
    assert MULTI.score(a, b) >= MULTI.threshold > MULTI.score(a, c)
    assert len(MULTI.model.weights) == len(MULTI.short_model.weights) == len(MEANING_FEATURES)


def test_multilingual_sketch_is_picklable_and_under_budget():
    s = MULTI.sketch(*ECHO["en"], "en")
    assert pickle.loads(pickle.dumps(s)) == s
    assert s.nbytes() < 1600
    assert pickle.loads(pickle.dumps(MULTI)).score(s, s) > 0.9


def test_missing_embedding_backend_gives_a_clear_message():
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(MissingBackendError, match="pip install"):
            load_sentence_model()
    else:  # a machine with the backend: a missing model folder still fails clearly
        with pytest.raises(MissingBackendError):
            load_sentence_model("no_such_model_package")


def test_make_similarity():
    assert make_similarity("lexical").name == "lexical"
    assert make_similarity("multilingual").name == "multilingual"
    with pytest.raises(ValueError):
        make_similarity("nope")
