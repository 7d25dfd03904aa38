"""Topic stage: lexicons, classifier, precedence rules and the Beam DoFn."""

from __future__ import annotations

import dataclasses
import datetime as dt

import apache_beam as beam
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import SCHEMA_VERSION, Article
from transforms.feeds.sources import read_sources
from transforms.stories.similarity import ENCODER_CHARS
from transforms.topics.assign import (
    AssignTopicFn,
    assign_topic,
    load_category_map,
)
from transforms.topics.classify import (
    SUPPORTED_LANGUAGES,
    EncoderHead,
    TopicClassifier,
    candidate_languages,
    encoder_text,
    load_encoder_head,
    load_lexicon,
    parse_lexicon,
    term_weight,
    words,
)
from transforms.topics.taxonomy import MEDIA_TOPICS, UNCLASSIFIED

NOW = dt.datetime(2024, 11, 23, 9, tzinfo=dt.UTC)

# Short news texts written for these tests: (language, expected topic, title, body).
FIXTURES = [
    ("en", "sport", "Late winner settles the derby",
     "The striker scored in injury time as the home side beat their rivals 2-1. The coach "
     "praised his squad after a tense second half in front of a full stadium."),
    ("en", "economy-business-finance", "Bank holds interest rates",
     "The central bank left its key interest rate unchanged as inflation eased. Shares rose "
     "on the stock exchange and analysts expect a cut in the next quarter."),
    ("en", "politics-government", "Parliament votes on the budget bill",
     "MPs backed the government's bill after a long debate in the Commons. The opposition "
     "leader said the prime minister had broken an election pledge."),
    ("en", "science-technology", "New phone chip promises longer battery life",
     "The company unveiled a processor for smartphones and laptops. Software developers "
     "say the chip will speed up apps and artificial intelligence features."),
    ("en", "arts-culture-entertainment-media", "Festival film wins top prize",
     "The director's new film won best picture at the festival. The actress, who plays a "
     "singer in the drama, thanked the cast and the audience at the premiere."),
    ("en", "health", "Hospital waiting lists grow",
     "Patients are waiting longer for surgery, doctors warned. Nurses said the flu season "
     "had filled wards and the health service needs more staff for treatment."),
    ("en", "weather", "Snow and ice warning for the weekend",
     "Forecasters expect heavy snow and freezing temperatures. A weather warning for ice "
     "is in place as a cold front brings strong winds and sleet."),
    ("de", "sport", "Bayern gewinnt das Derby",
     "Der Stürmer traf in der Nachspielzeit, und die Mannschaft gewann das Spiel mit 2:1. "
     "Der Trainer lobte seine Spieler nach dem Sieg in der Bundesliga."),
    ("de", "politics-government", "Koalition streitet über den Haushalt",
     "Im Bundestag stimmten die Abgeordneten über den Gesetzentwurf ab. Die Opposition "
     "fordert Neuwahlen, der Kanzler verteidigt die Politik der Regierung."),
    ("de", "economy-business-finance", "Chipfabrik: Baustart in der Lausitz",
     "Der Konzern investiert Milliarden in das neue Werk. Die Subventionen des Bundes und "
     "die Nachfrage der Autoindustrie machen den Standort für Investoren attraktiv."),
    ("de", "weather", "Sturm und Regen am Wochenende",
     "Der Wetterdienst warnt vor Sturmböen und Starkregen. Die Temperaturen sinken, in "
     "höheren Lagen fällt Schnee, nachts droht Glätte."),
    ("uk", "sport", "Збірна перемогла у кваліфікації",
     "Нападник забив два голи, і команда здобула перемогу в матчі. Тренер подякував "
     "гравцям і вболівальникам на стадіоні."),
    ("uk", "conflict-war-peace", "Нічний обстріл Харкова",
     "Російські війська атакували місто ракетами та безпілотниками. Сили ППО збили "
     "частину дронів, поранено мирних жителів, тривала повітряна тривога."),
    ("uk", "education", "Школи повертаються до очного навчання",
     "Учні знову сидітимуть за партами: у школах облаштували укриття. Вчителі та "
     "батьки обговорюють розклад уроків і дистанційне навчання в разі тривоги."),
    ("uk", "politics-government", "Рада ухвалила закон",
     "Верховна Рада ухвалила законопроєкт у другому читанні. Депутати від опозиції "
     "голосували проти, а уряд обіцяє реформу після виборів."),
    ("ru", "economy-business-finance", "Рубль ослаб после санкций",
     "Курс доллара вырос, рубль ослаб после новых санкций против банка. Центробанк "
     "может повысить ключевую ставку, инфляция ускоряется, цены растут."),
    ("ru", "weather", "Синоптики обещают морозы",
     "На выходных ожидается снегопад и гололёд, температура опустится до минус двадцати "
     "градусов. Гидрометцентр предупреждает о сильном ветре."),
    ("ru", "sport", "Сборная вышла в финал",
     "Нападающий забил гол на последней минуте, и команда победила в полуфинале. "
     "Главный тренер похвалил игроков, болельщики праздновали победу."),
    ("ru", "health", "Эпидемия гриппа",
     "Врачи фиксируют рост заболеваемости гриппом. В больницах не хватает мест, "
     "Минздрав призывает сделать прививку и при симптомах обратиться к врачу."),
]


@pytest.fixture(scope="module")
def classifier() -> TopicClassifier:
    return TopicClassifier.load()


def article(**kw) -> Article:
    base = dict(
        article_id="a1", url="https://x.example/a", feed_url="", source="X", title="",
        body="", body_source="backfill", authors=[], published_at=None, fetched_at=NOW,
        language="en", language_confidence=None, topic=UNCLASSIFIED, topic_code=None,
        topic_source="none", categories=[], content_hash="0" * 16, story_id="a1",
        is_story_lead=True, story_similarity=None, date="2024-11-23",
        schema_version=SCHEMA_VERSION)
    base.update(kw)
    return Article(**base)


# --- pure functions -------------------------------------------------------------------


def test_words_keep_apostrophes_and_codes_and_drop_numbers():
    text = "Britain’s MPs voted 310–250 on здоров'я (MP3)"
    assert words(text) == ["Britain", "MPs", "voted", "on", "здоров'я", "MP3"]


def test_term_weight_favours_rare_words():
    assert term_weight(7.0) < term_weight(4.0) < term_weight(2.0) <= 3.5
    assert term_weight(8.0) == 0.5


def test_parse_lexicon_shares_weight_between_topics_and_applies_boosts():
    lex = parse_lexicon("en", {"sport": "goal, match*2, world cup",
                               "politics-government": "match"},
                        MEDIA_TOPICS, zipf=lambda term, lang: 4.0)
    base = term_weight(4.0)
    assert lex.entries[("goal",)] == {"sport": base}
    # "match" is claimed by two topics: each gets half of its (boosted) weight.
    assert lex.entries[("match",)] == {"sport": base, "politics-government": base / 2}
    assert lex.entries[("world", "cup")] == {"sport": base * 1.5}


def test_parse_lexicon_refuses_unknown_topics_and_bad_terms():
    with pytest.raises(ValueError, match="unknown topic"):
        parse_lexicon("en", {"gossip": "celebrity"}, MEDIA_TOPICS, zipf=lambda t, lang: 3)
    with pytest.raises(ValueError, match="bad term"):
        parse_lexicon("en", {"sport": "a b c d e"}, MEDIA_TOPICS, zipf=lambda t, lang: 3)


def test_candidate_languages_guess_by_script_when_unknown():
    assert candidate_languages("anything", "de") == ("de",)
    assert candidate_languages("Київ і Львів", "und") == ("uk",)
    assert candidate_languages("Москва", None) == ("ru", "uk")
    assert candidate_languages("Hello", "fr") == ("en", "de")


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_lexicon_covers_every_topic(language):
    lex = load_lexicon(language, MEDIA_TOPICS)
    per_topic = {t: 0 for t in MEDIA_TOPICS}
    for weights in lex.entries.values():
        for t in weights:
            per_topic[t] += 1
    thin = {t: n for t, n in per_topic.items() if n < 30}
    assert not thin, f"{language}: topics with fewer than 30 terms: {thin}"


def test_shares_are_the_lexicon_evidence_over_total_plus_prior(classifier):
    clf = TopicClassifier(classifier.lexicons, prior=4.0)
    assert clf.shares({"sport": 6.0}) == {"sport": 0.6}
    assert clf.shares({"sport": 3.0, "health": 1.0}) == {"sport": 0.375, "health": 0.125}
    assert clf.shares({}) == {}


def _fake_head(blend: float = 0.5) -> EncoderHead:
    import numpy as np

    # Two topics; the fake encoder maps texts mentioning "goal" to the sport direction.
    topics = ("economy-business-finance", "sport")
    weights = np.array([[4.0, -4.0], [-4.0, 4.0]], dtype=np.float32)

    def encode(texts):
        return np.array([[0.0, 1.0] if "goal" in t else [1.0, 0.0] for t in texts],
                        dtype=np.float32)

    return EncoderHead(topics, weights, np.zeros(2, dtype=np.float32), blend, encode=encode)


def test_encoder_text_is_headline_and_lead():
    assert encoder_text("Title", "Body text") == "Title\nBody text"
    assert encoder_text("", "Body") == "Body"
    assert encoder_text("", "") == " "
    assert len(encoder_text("T", "x" * 10_000)) == ENCODER_CHARS


def test_encoder_head_probabilities_follow_the_embedding():
    head = _fake_head()
    p = head.probabilities("A late goal", "")
    assert p["sport"] > 0.99 and abs(sum(p.values()) - 1) < 1e-9
    assert head.probabilities("", "Shares fell")["economy-business-finance"] > 0.99


def test_load_encoder_head_reads_the_trained_file_format(tmp_path):
    import json

    import numpy as np

    path = tmp_path / "encoder.npz"
    meta = {"topics": ["economy-business-finance", "sport"], "blend": 0.25,
            "blend_other_languages": 0.75}
    np.savez(path, weights=np.eye(2, dtype=np.float32), bias=np.zeros(2, dtype=np.float32),
             meta=np.array(json.dumps(meta)))
    head = load_encoder_head(path)
    assert head.topics == ("economy-business-finance", "sport")
    assert (head.blend, head.blend_other) == (0.25, 0.75)
    assert head.weights.shape == (2, 2)
    assert load_encoder_head(tmp_path / "missing.npz") is None


def test_the_bundled_encoder_head_covers_every_topic():
    head = load_encoder_head()
    assert head is not None and set(head.topics) == set(MEDIA_TOPICS)
    assert head.weights.shape == (512, len(MEDIA_TOPICS)) and 0.0 < head.blend < 1.0


def test_the_encoder_head_is_opt_in_and_reaches_the_dofn():
    assert TopicClassifier().encoder_head() is None
    fn = AssignTopicFn({}, use_encoder=True)
    fn.setup()
    guess = fn._classifier.classify(FIXTURES[0][2], FIXTURES[0][3], "en")
    assert fn._classifier.encoder_head() is not None and guess.topic == "sport"


def test_the_encoder_head_reads_the_story_stage_encoder():
    import numpy as np

    from transforms.stories import similarity

    head = load_encoder_head()
    _, _, title, body = FIXTURES[0]
    held = similarity.load_models(similarity.MultilingualSimilarity())
    loads = []
    probs = head.probabilities(title, body)
    # One shared copy per process: the head reads the encoder the story stage holds, so
    # taking it again loads nothing.
    assert similarity._ENCODER.acquire(lambda: loads.append(1)) is held and not loads
    vec = similarity.encode_meaning([encoder_text(title, body)])[0]
    logits = vec.astype(np.float64) @ head.weights + head.bias
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    assert [probs[t] for t in head.topics] == pytest.approx(expected.tolist(), abs=1e-6)

def test_encoder_head_is_blended_with_the_lexicon_shares(classifier):
    _, _, title, body = FIXTURES[1]  # an economy text
    clf = TopicClassifier(classifier.lexicons)
    clf._encoder_head = _fake_head(blend=0.5)
    alone = TopicClassifier(classifier.lexicons, use_encoder=False)
    lexicon = alone.classify(title, body, "en")
    blended = clf.classify(title, body, "en")
    assert lexicon.topic == blended.topic == "economy-business-finance"
    assert blended.confidence == pytest.approx(0.5 * lexicon.confidence + 0.5, abs=0.01)
    # The head can outvote thin lexicon evidence ...
    swayed = clf.classify("A goal for the club", "Shares of the club rose.", "en")
    assert swayed.topic == "sport"
    # ... but a text in which the lexicons find nothing still abstains.
    assert clf.classify("", "Lorem ipsum zzgoalzz dolor sit amet.", "en").topic is None
    assert alone.encoder_head() is None
    # Outside the lexicon languages the head gets its own, larger weight.
    clf._encoder_head.blend_other = 0.9
    other = clf.classify(title, body, "fr")
    assert other.confidence == pytest.approx(0.1 * lexicon.confidence + 0.9, abs=0.01)


def test_the_packaged_encoder_reads_every_supported_language(classifier):
    head = TopicClassifier(classifier.lexicons, use_encoder=True).encoder_head()
    assert head is not None
    for language, expected, title, body in FIXTURES:
        probs = head.probabilities(title, body)
        ranked = sorted(probs, key=probs.get, reverse=True)
        assert expected in ranked[:3], (language, expected, ranked[:3])


# --- the classifier on texts written for these tests ----------------------------------


@pytest.mark.parametrize(("language", "expected", "title", "body"), FIXTURES,
                         ids=[f"{f[0]}-{f[1]}" for f in FIXTURES])
def test_fixture_texts_get_their_topic(classifier, language, expected, title, body):
    guess = classifier.classify(title, body, language)
    assert guess.topic == expected, guess
    assert guess.language == language
    assert 0 < guess.confidence <= 1


def test_unknown_language_is_scored_with_the_lexicon_that_fits(classifier):
    _, expected, title, body = FIXTURES[12]  # Ukrainian, declared as undetermined
    guess = classifier.classify(title, body, "und")
    assert (guess.topic, guess.language) == (expected, "uk")


def test_abstains_without_evidence(classifier):
    for text in ("", "12345 67890", "The of and to in a is that it was for on are with as"):
        guess = classifier.classify("", text, "en")
        assert guess.topic is None and guess.confidence < classifier.threshold


def test_threshold_makes_it_abstain(classifier):
    _, expected, title, body = FIXTURES[0]
    strict = TopicClassifier(classifier.lexicons, threshold=1.0)
    guess = strict.classify(title, body, "en")
    assert guess.topic is None and guess.best == expected
    with pytest.raises(ValueError):
        TopicClassifier(classifier.lexicons, threshold=1.5)


def test_classifier_loads_each_lexicon_once(classifier, monkeypatch):
    # What makes it fast once loaded (bench/bench_topics.py measures the time): a second
    # article reads the loaded lexicon, it does not load one again.
    from transforms.topics import classify

    _, _, title, body = FIXTURES[1]
    first = classifier.classify(title, body, "en")
    loads = []
    monkeypatch.setattr(classify, "load_lexicon", lambda *a: loads.append(a))
    assert classifier.classify(title, (body + " ") * 30, "en").topic == first.topic
    assert loads == []


# --- precedence -----------------------------------------------------------------------


def test_precedence_feed_then_category_then_classifier_then_none(classifier):
    mapping = load_category_map()
    sport_text = dict(title=FIXTURES[0][2], body=FIXTURES[0][3])
    forced = assign_topic(article(topic="weather", topic_source="feed", categories=["Sport"],
                                  **sport_text), mapping, classifier)
    assert (forced.topic, forced.topic_code, forced.topic_source) == (
        "weather", "medtop:17000000", "feed")
    by_category = assign_topic(article(categories=["Politik"], **sport_text), mapping,
                               classifier)
    assert (by_category.topic, by_category.topic_source) == ("politics-government", "category")
    by_text = assign_topic(article(categories=["World"], **sport_text), mapping, classifier)
    assert (by_text.topic, by_text.topic_code, by_text.topic_source) == (
        "sport", "medtop:15000000", "classifier")
    nothing = assign_topic(article(body="Lorem ipsum dolor sit amet."), mapping, classifier)
    assert (nothing.topic, nothing.topic_code, nothing.topic_source) == (
        UNCLASSIFIED, None, "none")
    without = assign_topic(article(**sport_text), mapping, None)
    assert without.topic_source == "none"


def test_feed_topic_outside_the_table_is_not_trusted():
    out = assign_topic(article(topic="../../etc", topic_source="feed"), {}, None)
    assert (out.topic, out.topic_source) == (UNCLASSIFIED, "none")


def test_category_map_is_validated(tmp_path):
    extra = tmp_path / "map.yaml"
    extra.write_text("Fußball: sport\nDiverses: null\n")
    mapping = load_category_map(str(extra))
    assert mapping["fußball".casefold()] == "sport" and mapping["diverses"] is None
    extra.write_text("Fußball: soccer\n")
    with pytest.raises(ValueError, match="unknown topic 'soccer'"):
        load_category_map(str(extra))


def test_feed_config_topics_must_be_known_slugs(tmp_path):
    cfg = tmp_path / "feeds.yaml"
    feeds = [{"url": "https://a.example/rss", "topic": "sport"},
             {"url": "https://b.example/rss", "topic": "Sport"},
             {"url": "https://c.example/rss", "topic": "../../etc"},
             {"url": "https://d.example/rss", "topic": "spοrt"},  # Greek omicron
             {"url": "https://e.example/rss", "topic": "x" * 10_000},
             {"url": "https://f.example/rss", "topic": UNCLASSIFIED}]
    cfg.write_text(yaml.safe_dump({"feeds": feeds}, allow_unicode=True))
    subs = read_sources([str(cfg)])
    assert [f.url for f in subs.feeds] == ["https://a.example/rss"]
    assert len(subs.problems) == 5
    assert all("unknown topic" in message and len(message) < 600
               for _, message in subs.problems)


# --- the DoFn -------------------------------------------------------------------------


def test_assign_topic_fn_in_a_pipeline():
    items = [article(article_id=f"a{i}", language=lang, title=title, body=body)
             for i, (lang, _, title, body) in enumerate(FIXTURES[:3] + FIXTURES[11:13])]
    items.append(article(article_id="cat", categories=["Wirtschaft"], body="Kurz."))
    expected = [(f"a{i}", f[1], "classifier")
                for i, f in enumerate(FIXTURES[:3] + FIXTURES[11:13])]
    expected.append(("cat", "economy-business-finance", "category"))
    with TestPipeline() as p:
        out = (p | beam.Create(items)
               | beam.ParDo(AssignTopicFn(load_category_map()))
               | beam.Map(lambda a: (a.article_id, a.topic, a.topic_source)))
        assert_that(out, equal_to(expected))


def test_assign_topic_fn_validates_and_can_skip_the_classifier():
    with pytest.raises(ValueError):
        AssignTopicFn({}, threshold=-0.1)
    fn = AssignTopicFn({}, use_classifier=False)
    fn.setup()
    out = list(fn.process(article(title=FIXTURES[0][2], body=FIXTURES[0][3])))
    assert [(a.topic, a.topic_source) for a in out] == [(UNCLASSIFIED, "none")]
    fn = AssignTopicFn({})
    assert dataclasses.fields(Article)  # the DoFn pickles without a loaded classifier
    import pickle

    assert pickle.loads(pickle.dumps(fn))._classifier is None
