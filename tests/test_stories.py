"""AssignStories on a real Beam runner: copies dropped, echoes joined, re-runs add nothing.

The fixture texts below were written for these tests: the same story (Ukrainian units in
the Kursk region and Trump's inauguration) told four times in English, Ukrainian and
Russian, and unrelated war stories of the same days and region that must not join it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import ARTICLE_SCHEMA, SCHEMA_VERSION, Article
from transforms.extraction.text import content_hash
from transforms.sinks.parquet import WriteParquetTable, article_partition
from transforms.stories.seeds import seed_files
from transforms.stories.similarity import (
    SHORT_WORDS,
    STORE_KEYS,
    LexicalSimilarity,
    MultilingualSimilarity,
    Sketch,
)
from transforms.stories.stage import (
    APART,
    GAP_FREE_HOURS,
    GAP_PENALTY,
    AssignStories,
    Edge,
    Node,
    ResolveStories,
    StoryItem,
    StoryPoolCoder,
    VoteStories,
    choose_parent,
    decide,
    indexed_under,
    later_by,
    matches_in_group,
    vote_story,
)

T0 = dt.datetime(2024, 11, 23, 8, tzinfo=dt.UTC)
NOW = dt.datetime(2024, 11, 25, tzinfo=dt.UTC)

KURSK = {
    "en-soldiers": ("en", "Ukrainian troops told to hold Kursk ground until Trump takes office",
                    "Soldiers fighting inside Russia's Kursk region say their commanders want "
                    "them to keep as much captured land as possible until Donald Trump is sworn "
                    "in as US president on 20 January, according to accounts they gave the BBC "
                    "over messaging apps. One of them said the territory could later be traded "
                    "in negotiations with Moscow, though nobody knows for what. Kyiv's centre "
                    "for countering disinformation denied that any such order exists. President "
                    "Volodymyr Zelensky has said Vladimir Putin wants Ukrainian units out of "
                    "Kursk before the inauguration to show that he is in control."),
    "en-zelensky": ("en", "Zelensky says Putin wants Ukraine pushed out of Kursk by January 20",
                    "Vladimir Putin has ordered his army to drive Ukrainian forces out of the "
                    "Kursk region before Donald Trump's inauguration on 20 January, President "
                    "Volodymyr Zelensky said on Saturday, speaking at an international food "
                    "security summit in Kyiv. For the Kremlin, Zelensky said, recapturing Kursk "
                    "matters above all because Putin wants to look in control of a war he does "
                    "not control. Ukraine's incursion across the border began in August."),
    "uk": ("uk", "Зеленський: Путін хоче витіснити ЗСУ з Курщини до інавгурації Трампа",
           "Президент Володимир Зеленський заявив, що Володимир Путін наказав своїй армії "
           "витіснити українські сили з Курської області до 20 січня, коли відбудеться "
           "інавгурація Дональда Трампа. За словами Зеленського, Путіну важливо показати, що "
           "він контролює ситуацію, хоча насправді не контролює. Українська операція на "
           "Курщині триває з серпня."),
    "ru": ("ru", "Зеленский: Путин хочет выбить ВСУ из Курской области до инаугурации Трампа",
           "Президент Украины Владимир Зеленский сообщил, что Владимир Путин приказал "
           "вытеснить украинские войска из Курской области до 20 января, на которое назначена "
           "инаугурация Дональда Трампа. По словам Зеленского, Путин стремится показать, что "
           "контролирует ситуацию. Украинские военные ранее рассказали Би-би-си, что им "
           "поручено удерживать территорию как можно дольше."),
}
UNRELATED = {
    "battle": ("en", "Ukraine says dozens of Russian assaults repelled near Pokrovsk",
               "Ukrainian troops beat back 45 Russian attacks around Pokrovsk in the Donetsk "
               "region over the past day, the General Staff in Kyiv said, adding that several "
               "tanks and armoured vehicles were destroyed. Heavy fighting was also reported "
               "near Kurakhove, where Russian forces have been trying to advance for weeks."),
    "strike": ("uk", "Росія вдарила балістичною ракетою по Дніпру",
               "Російські війська вранці вдарили по Дніпру балістичною ракетою. Пошкоджено "
               "промислове підприємство та кілька житлових будинків, поранено двох людей, "
               "повідомив голова обласної військової адміністрації. Повітряні сили заявили, "
               "що ракету було запущено з Астраханської області."),
    "aid": ("en", "US lawmakers clash over new military aid package for Kyiv",
            "Members of Congress argued on Tuesday over a 24 billion dollar package of weapons "
            "and budget support for Ukraine. Several Republicans said European allies should "
            "carry more of the cost, while Democrats warned that any delay would only help "
            "Moscow on the battlefield."),
    "strike-ru": ("ru", "Ночная атака дронов на Одессу",
                  "Российские беспилотники ночью атаковали Одессу, в городе повреждены "
                  "энергетическая инфраструктура и жилые дома, сообщил глава областной "
                  "администрации. Силы ПВО сбили большую часть дронов над морем."),
}


def article(aid: str, lang: str, title: str, body: str, hour: int) -> Article:
    when = T0 + dt.timedelta(hours=hour)
    return Article(
        article_id=aid, url=f"https://{aid}.example/news", feed_url="", source=aid,
        title=title, body=body, body_source="backfill", authors=[], published_at=when,
        fetched_at=when, language=lang, language_confidence=None, topic="unclassified",
        topic_code=None, topic_source="none", categories=[], content_hash=content_hash(body),
        story_id=aid, is_story_lead=True, story_similarity=None,
        date=when.strftime("%Y-%m-%d"), schema_version=SCHEMA_VERSION)


def corpus() -> list[Article]:
    out = []
    for hour, (aid, (lang, title, body)) in enumerate({**KURSK, **UNRELATED}.items()):
        out.append(article(aid, lang, title, body, hour))
    return out


WIRE = ("The central bank kept its main interest rate unchanged on Thursday, saying inflation "
        "had slowed for a third month in a row but remained above its target. The governor "
        "told reporters that the bank would watch wage growth and energy prices closely before "
        "deciding on any cut next year. Analysts had expected the decision. The currency "
        "strengthened slightly after the announcement, and government bond yields fell. "
        "Lenders said mortgage demand had picked up in the autumn as rates stabilised.")


def copies() -> list[Article]:
    """An original, an exact copy (other URL) and a re-post with boilerplate and edits."""
    original = article("wire", "en", "Central bank holds rates", WIRE, 0)
    exact = dataclasses.replace(article("exact", "en", "Central bank holds rates", WIRE, 1))
    edited = (WIRE.replace("Thursday", "Thursday afternoon").replace("closely", "carefully")
              + " Subscribe to our newsletter for the latest business news. Follow us.")
    near = article("near", "en", "Bank leaves rates on hold", edited, 2)
    return [original, exact, near]


def expected_stories():
    return [("en-soldiers", "en-soldiers", True), ("en-zelensky", "en-soldiers", False),
            ("uk", "en-soldiers", False), ("ru", "en-soldiers", False),
            ("battle", "battle", True), ("strike", "strike", True), ("aid", "aid", True),
            ("strike-ru", "strike-ru", True)]


SIMILARITIES = {"multilingual": MultilingualSimilarity(), "lexical": LexicalSimilarity(),
                "multilingual, Ukrainian unread": MultilingualSimilarity(bridged=frozenset())}


@pytest.mark.parametrize("kind", sorted(SIMILARITIES))
@pytest.mark.parametrize("seed", [None, 3, 11])
def test_echoes_share_a_story_and_unrelated_stories_do_not(seed, kind):
    articles = corpus()
    if seed is not None:
        random.Random(seed).shuffle(articles)
    with TestPipeline() as p:
        out = p | beam.Create(articles) | AssignStories(SIMILARITIES[kind],
                                                        clock=lambda: NOW)
        assert_that(out.articles | beam.Map(lambda a: (a.article_id, a.story_id,
                                                       a.is_story_lead)),
                    equal_to(expected_stories()), label="stories")
        assert_that(out.duplicates, equal_to([]), label="no-duplicates")


def test_similarity_is_set_for_echoes_only():
    with TestPipeline() as p:
        out = p | beam.Create(corpus()) | AssignStories(clock=lambda: NOW)
        assert_that(out.articles | beam.Map(
            lambda a: (a.article_id, a.story_similarity is None
                       or 0.0 < a.story_similarity <= 1.0, a.story_similarity is None)),
            equal_to([(aid, True, lead) for aid, _, lead in expected_stories()]))


def test_exact_and_near_copies_are_dropped_with_lineage():
    with TestPipeline() as p:
        out = p | beam.Create(copies()) | AssignStories(clock=lambda: NOW)
        assert_that(out.articles | beam.Map(lambda a: a.article_id), equal_to(["wire"]),
                    label="kept")
        assert_that(out.duplicates | beam.Map(lambda d: (d.article_id, d.level, d.duplicate_of,
                                                         d.similarity > 0.3)),
                    equal_to([("exact", "content", "wire", True),
                              ("near", "near", "wire", True)]), label="dropped")


def test_drop_echoes_writes_leads_only():
    with TestPipeline() as p:
        out = p | beam.Create(corpus()) | AssignStories(drop_echoes=True, clock=lambda: NOW)
        assert_that(out.articles | beam.Map(lambda a: a.article_id),
                    equal_to(["en-soldiers", "battle", "strike", "aid", "strike-ru"]),
                    label="leads")
        assert_that(out.duplicates | beam.Map(lambda d: (d.article_id, d.level,
                                                         d.duplicate_of)),
                    equal_to([("en-zelensky", "echo", "en-soldiers"),
                              ("uk", "echo", "en-soldiers"), ("ru", "echo", "en-soldiers")]),
                    label="echoes")


def test_window_keeps_distant_articles_apart():
    a, b = corpus()[:2]
    b = dataclasses.replace(b, published_at=a.published_at + dt.timedelta(hours=80))
    with TestPipeline() as p:
        out = (p | beam.Create([a, b])
               | AssignStories(window=dt.timedelta(hours=72), clock=lambda: NOW))
        assert_that(out.articles | beam.Map(lambda x: (x.article_id, x.is_story_lead)),
                    equal_to([("en-soldiers", True), ("en-zelensky", True)]))


def write_articles(tmp_path, articles, run_id):
    """Writes articles through the real sink (as the ingest pipeline does)."""
    with TestPipeline() as p:
        out = p | beam.Create(articles) | AssignStories(clock=lambda: NOW)
        _ = out.articles | WriteParquetTable(str(tmp_path), "articles", ARTICLE_SCHEMA,
                                             article_partition, run_id)


def read_back(tmp_path) -> list[dict]:
    rows = []
    for path in seed_files(str(tmp_path), None, None, None):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def test_rerun_over_the_same_input_adds_no_rows(tmp_path):
    articles = corpus() + copies()
    write_articles(tmp_path, articles, "run1")
    first = read_back(tmp_path)
    assert len(first) == len(corpus()) + 1  # exact and near copies were dropped
    with TestPipeline() as p:
        out = (p | beam.Create(articles)
               | AssignStories(existing=str(tmp_path), run_id="run2", clock=lambda: NOW))
        assert_that(out.articles, equal_to([]), label="no-new-articles")
        assert_that(out.duplicates | beam.Map(lambda d: d.level),
                    equal_to(["url"] * len(first) + ["content", "near"]), label="all-reported")


def test_new_echo_joins_a_story_already_written(tmp_path):
    articles = corpus()
    old = [a for a in articles if a.article_id != "ru"]
    write_articles(tmp_path, old, "run1")
    ru = [a for a in articles if a.article_id == "ru"]
    with TestPipeline() as p:
        out = (p | beam.Create(ru)
               | AssignStories(existing=str(tmp_path), run_id="run2", clock=lambda: NOW))
        assert_that(out.articles | beam.Map(lambda a: (a.article_id, a.story_id,
                                                       a.is_story_lead)),
                    equal_to([("ru", "en-soldiers", False)]))


# ----------------------------------------------------------------- pure helpers

SIM = LexicalSimilarity()


def item(aid: str, hour: int, text: str, seed: str | None = None) -> StoryItem:
    return StoryItem(aid, hour * 3_600_000_000, aid, SIM.sketch("", text, "en"), seed)


def test_choose_parent_prefers_near_copies_then_best_score_then_earlier():
    echo_hi = Edge("b", 20, 0.9, None)
    echo_lo = Edge("a", 10, 0.5, None)
    near_late = Edge("c", 30, 0.7, 0.8)
    near_early = Edge("d", 5, 0.6, 0.5)
    assert choose_parent([echo_lo, echo_hi]) == echo_hi
    assert choose_parent([echo_hi, near_late, near_early, echo_hi]) == near_early
    assert choose_parent([Edge("x", 9, 0.5, None), Edge("w", 9, 0.5, None)]).target == "w"
    assert choose_parent([]) is None


def test_matches_in_group_respects_order_window_and_cap():
    text = KURSK["en-zelensky"][2]
    a, b, c = item("a", 0, text), item("b", 1, text), item("c", 100, text)
    found = list(matches_in_group(SIM, [], [a, b, c], 0.2, 72 * 3_600_000_000, 64))
    assert [(x, e.target) for x, e in found] == [("b", "a")]
    capped = list(matches_in_group(SIM, [a], [b], 0.2, 72 * 3_600_000_000, 0))
    assert capped == []


def test_an_article_is_kept_only_under_its_strongest_keys():
    text = KURSK["en-zelensky"][2]
    a, b = item("a", 0, text), item("b", 1, text)
    strong, weak = a.sketch.keys[0], a.sketch.keys[-1]
    assert len(a.sketch.keys) > STORE_KEYS
    assert indexed_under(a, strong) and not indexed_under(a, weak) and indexed_under(a, None)
    week = 72 * 3_600_000_000
    # b looks a up under every key, but finds it only where a was kept.
    assert [e.target for _, e in matches_in_group(SIM, [], [a, b], 0.2, week, 64, strong)] \
        == ["a"]
    assert list(matches_in_group(SIM, [], [a, b], 0.2, week, 64, weak)) == []


def test_a_headline_only_article_is_kept_under_all_its_keys():
    title = KURSK["en-zelensky"][1]
    a = StoryItem("a", 0, "ha", SIM.sketch(title, "", "en"))
    assert len(a.sketch.keys) > STORE_KEYS and a.sketch.words < SHORT_WORDS
    assert all(indexed_under(a, k) for k in a.sketch.keys)
    assert not indexed_under(a, "w:unrelated")


def test_an_article_is_kept_under_every_key_of_its_encoder_vector():
    multi = MultilingualSimilarity()
    text = KURSK["en-zelensky"][2]
    a = StoryItem("a", 0, "ha", multi.sketch(KURSK["en-zelensky"][1], text, "en"))
    vector_keys = [k for k in a.sketch.keys if k.startswith("e")]
    assert vector_keys and all(indexed_under(a, k) for k in vector_keys)
    assert not indexed_under(a, a.sketch.keys[STORE_KEYS])
    # Kept for the firing only: state would otherwise hold eight more copies of a sketch.
    from transforms.stories.stage import kept_in_state

    assert not any(kept_in_state(k) for k in vector_keys)
    assert all(kept_in_state(k) for k in a.sketch.keys[:STORE_KEYS])


def test_an_article_probes_the_neighbouring_bucket_of_each_band():
    from transforms.stories.similarity import VECTOR_BANDS, probe_keys, vector_keys
    from transforms.stories.stage import _by_block

    multi = MultilingualSimilarity()
    a = StoryItem("a", 0, "ha", multi.sketch(KURSK["en-zelensky"][1], KURSK["en-zelensky"][2],
                                             "en"))
    own, probes = vector_keys(a.sketch.vector), probe_keys(a.sketch.vector)
    assert len(own) == VECTOR_BANDS and 0 < len(probes) < VECTOR_BANDS
    bands = dict(k.split(":") for k in own)
    for probe in probes:
        band, signs = probe.split(":")
        # A band whose weakest sign is uncertain, with that sign flipped.
        assert bin(int(bands[band], 16) ^ int(signs, 16)).count("1") == 1
    # Probing every band is the same flip everywhere.
    from transforms.stories import similarity

    saved = similarity.PROBE_MARGIN
    probe_keys.cache_clear()
    try:
        similarity.PROBE_MARGIN = float("inf")
        assert len(probe_keys(a.sketch.vector)) == VECTOR_BANDS
        assert set(probes) <= set(probe_keys(a.sketch.vector))
    finally:
        similarity.PROBE_MARGIN = saved
        probe_keys.cache_clear()
    # It looks up under them, but later articles find it under its own bands only.
    keys = [k for k, _ in (m for m in _by_block(a) if isinstance(m, tuple))]
    assert set(probes) <= set(keys) and set(a.sketch.keys) <= set(keys)
    assert not any(indexed_under(a, k) for k in probes)
    # A headline probes nothing, nor does a lexical-only sketch (no vector).
    head = StoryItem("h", 0, "hh", multi.sketch(KURSK["en-zelensky"][1], "", "en"))
    assert head.sketch.vector and head.sketch.words < SHORT_WORDS
    assert [k for k, _ in (m for m in _by_block(head) if isinstance(m, tuple))] == \
        list(head.sketch.keys)
    lexical = StoryItem("b", 0, "hb", SIM.sketch("", KURSK["en-zelensky"][2], "en"))
    assert [k for k, _ in (m for m in _by_block(lexical) if isinstance(m, tuple))] == \
        list(lexical.sketch.keys)


def test_story_pool_coder_round_trips_compactly():
    multi = MultilingualSimilarity()
    items = [StoryItem(f"id{i}", micros, f"hash{i}",
                       dataclasses.replace(multi.sketch(title, body, lang), keys=()), seed)
             for i, ((lang, title, body), micros, seed) in enumerate(zip(
                 KURSK.values(), (0, -5_000_000, 10**15, 7), (None, "story", None, None),
                 strict=True))]
    coder = StoryPoolCoder()
    data = coder.encode(items)
    assert coder.decode(data) == items
    assert coder.decode(coder.encode([])) == []
    assert coder.is_deterministic() and coder.encode(items) == data
    import pickle
    assert len(data) < len(pickle.dumps(items))


def test_story_messages_round_trip_through_their_registered_coder():
    from transforms.stories.messages import (
        Ask,
        Decision,
        DecisionCoder,
        Exact,
        ItemRef,
        Level,
        Peer,
        Pointer,
        StoryMessage,
        StoryMessageCoder,
        Vote,
        by_type,
    )

    it = StoryItem("a", 7, "h", MultilingualSimilarity().sketch(*KURSK["uk"][1:], "uk"), "s")
    node = Node("n", "p", False, "echo", 0.5, "p", None)
    messages = [it, it._replace(seed_story=None), ItemRef(True, -3, "a", None),
                Edge("b", 2**40, 0.31, None), Edge("b", 2, 0.7, 0.55), node,
                Ask._make(node), Vote._make(node), Pointer("p", True, False),
                Exact("content", "k", 1.0), Edge("c", 3, 0.45, None, True),
                Peer("x", 0.45, True), Level("x", -0.25)]
    for message in messages:
        coder = beam.coders.registry.get_coder(type(message))
        assert isinstance(coder, StoryMessageCoder) and coder.is_deterministic()
        back = coder.decode(coder.encode(message))
        assert back == message and type(back) is type(message)
        # Deterministic: equal messages, equal bytes, whatever object they were decoded to.
        assert coder.encode(back) == coder.encode(message)
    assert isinstance(beam.coders.registry.get_coder(StoryMessage), StoryMessageCoder)
    assert isinstance(beam.coders.registry.get_coder(Decision), DecisionCoder)
    with pytest.raises(TypeError, match="not a story message"):
        StoryMessageCoder().encode(("a", 1))
    one = article("x", "en", "T", "Body", 0)
    decision = DecisionCoder()
    assert decision.decode(decision.encode(one)) == one
    groups = by_type([node, Vote._make(node), Ask._make(node), node], Node, Vote, Ask)
    assert groups == {Node: [node, node], Vote: [node], Ask: [node]}
    assert [type(v) for v in groups[Vote]] == [Vote]


def test_story_stage_shuffles_and_state_pickle_nothing():
    """Every GroupByKey of the stage, batch and continuous, has a string key and values
    written by the story message coders; no state spec of the stage pickles."""
    from apache_beam.coders import PickleCoder
    from apache_beam.coders.coders import FastPrimitivesCoder
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.transforms.userstate import get_dofn_specs
    from apache_beam.transforms.window import FixedWindows

    from transforms.stories import stage
    from transforms.stories.messages import DecisionCoder, StoryMessageCoder

    class Shuffles(PipelineVisitor):
        def __init__(self):
            self.coders = {}

        def visit_transform(self, node):
            if isinstance(node.transform, beam.GroupByKey):
                hint = node.inputs[0].element_type
                self.coders[node.full_label] = beam.coders.registry.get_coder(hint)

    def walk(coder):
        yield coder
        for c in coder._get_component_coders():
            yield from walk(c)

    for across in (False, True):
        p = beam.Pipeline()
        articles = p | beam.Create([article("x", "en", "T", "B", 0)])
        if across:
            articles = articles | beam.WindowInto(FixedWindows(300))
        _ = articles | AssignStories(SIM, existing="/nonexistent", across_windows=across)
        shuffles = Shuffles()
        p.visit(shuffles)
        # The seed file names and the batch's time bounds are not story messages.
        story_shuffles = {k: c for k, c in shuffles.coders.items() if "AssignStories" in k
                          and "SpreadSeedFiles" not in k and "BatchBounds" not in k}
        assert len(story_shuffles) >= 8
        for label, coder in story_shuffles.items():
            key, value = coder._get_component_coders()
            assert isinstance(key, beam.coders.StrUtf8Coder), label
            assert isinstance(value, StoryMessageCoder), (label, coder)
            if not isinstance(value, DecisionCoder):
                assert coder.is_deterministic(), label
            assert not any(isinstance(c, (PickleCoder, FastPrimitivesCoder))
                           for c in walk(coder)), (label, coder)
    for fn in (stage.KeepFirstItemFn, stage.CompareWithinKeyFn, stage.JumpWithMemoryFn):
        state_specs, _ = get_dofn_specs(fn.__new__(fn))
        assert state_specs
        for spec in state_specs:
            assert not isinstance(spec.coder, PickleCoder), (fn, spec)
            assert spec.coder.is_deterministic(), (fn, spec)


def _jumped(nodes: list[Node], rounds: int) -> list[Node]:
    """Pointer jumping as synchronous rounds over all nodes at once (what the shuffled
    rounds must give): a pending node takes its pointer's pointer and done flag, and on
    its first jump learns whether its parent is a near copy."""
    state = {n.article_id: n for n in nodes}
    for _ in range(rounds):
        before = dict(state)
        for aid, node in before.items():
            if node.done:
                continue
            target = before.get(node.ptr)
            ptr, done, near = ((target.ptr, target.done, target.level == "near") if target
                               else (node.ptr, True, False))
            state[aid] = node._replace(ptr=ptr, done=done, parent_near=(
                near if node.parent_near is None else node.parent_near))
    return sorted(state.values())


@pytest.mark.parametrize("rounds", [1, 3, 6])
def test_batch_pointer_rounds_resolve_as_synchronous_jumps(rounds):
    # A random forest: deep chains (longer than 2**rounds for few rounds), wide stars,
    # near copies, seeds, and pointers to an article outside the batch.
    rng = random.Random(rounds)
    nodes = []
    for i in range(300):
        aid = f"n{i:03d}"
        if i == 0 or rng.random() < 0.15:
            nodes.append(Node(aid, aid, True, "lead", None, None))
        elif rng.random() < 0.05:
            nodes.append(Node(aid, "written", True, "seed", None, None))
        else:
            parent = "gone" if rng.random() < 0.02 else (
                f"n{i - 1:03d}" if rng.random() < 0.6 else f"n{rng.randrange(i):03d}")
            level = "near" if rng.random() < 0.3 else "echo"
            nodes.append(Node(aid, parent, False, level, 0.7, parent))
    with TestPipeline() as p:
        resolved = p | beam.Create(nodes) | ResolveStories(rounds)
        assert_that(resolved, equal_to(_jumped(nodes, rounds)))


def test_decide_levels():
    art = corpus()[1]
    lead = Node(art.article_id, art.article_id, True, "lead", None, None)
    assert decide(art, lead, None, False)[1].is_story_lead
    echo = Node(art.article_id, "root", True, "echo", 0.6, "p", False)
    kind, value = decide(art, echo, "root", False)
    assert (kind, value.story_id, value.is_story_lead, value.story_similarity) == (
        "article", "root", False, 0.6)
    assert decide(art, echo, "root", True) == ("duplicate", ("echo", "root", 0.6))
    near = Node(art.article_id, "root", True, "near", 0.7, "p", False)
    assert decide(art, near, "root", False) == ("duplicate", ("near", "p", 0.7))
    chained = near._replace(parent_near=True)
    assert decide(art, chained, "root", False) == ("duplicate", ("near", "root", 0.7))


def test_vote_story_moves_an_echo_to_the_story_of_most_matches():
    echo = Node("x", "A", True, "echo", 0.9, "a1", False)

    def vote(story, parent, score, done=True):
        return Node("x", story, done, "vote", score, parent)

    votes = [vote("A", "a1", 0.9), vote("B", "b1", 0.7), vote("B", "b2", 0.8, False),
             vote("B", "b1", 0.75)]  # b1 matched under two keys counts once
    assert vote_story(echo, votes) == echo._replace(ptr="B", done=False, score=0.8,
                                                    parent="b2")
    # Equal counts: the best score; equal scores too: the article stays where it is.
    assert vote_story(echo, [vote("A", "a1", 0.9), vote("B", "b1", 0.95)]).ptr == "B"
    assert vote_story(echo, [vote("B", "b1", 0.9), vote("A", "a1", 0.9)]).ptr == "A"
    assert vote_story(echo, []) == echo
    for level in ("lead", "seed", "near"):
        other = echo._replace(level=level)
        assert vote_story(other, votes) == other


def test_vote_story_joins_a_story_only_when_it_agrees_with_it():
    """A match with one member is not enough when the other members compared say no."""
    echo = Node("x", "A", True, "echo", 0.8, "a2", False)

    def vote(story, parent, score):
        return Node("x", story, True, "vote", score, parent)

    lead = Node("x", "x", True, APART, None, None)  # written as a lead, votes again
    # A chain: x matched a2 (an echo of A) but was compared with A's lead and another
    # member and found apart from both.
    chained = [vote("A", "a2", 0.8), vote("A", "A", 0.3), vote("A", "a3", 0.2)]
    assert vote_story(echo, chained, threshold=0.5) == lead
    # Without a threshold every vote agrees: the pairwise behaviour.
    assert vote_story(echo, chained).ptr == "A"
    # The lead agrees: open, whatever the other members say.
    assert vote_story(echo, [vote("A", "a2", 0.4), vote("A", "a3", 0.3), vote("A", "A", 0.6)],
                      threshold=0.5) == echo._replace(score=0.6, parent="A")
    # Most members compared agree (2 of 3): open; half of them (1 of 2): not.
    most = [vote("A", "a2", 0.8), vote("A", "a3", 0.7), vote("A", "a4", 0.2)]
    assert vote_story(echo, most, threshold=0.5).ptr == "A"
    assert vote_story(echo, most[:1] + most[2:], threshold=0.5) == lead
    # A closed story does not compete: the open one wins though it has fewer matches.
    mixed = [*chained, vote("B", "b1", 0.6)]
    assert vote_story(echo, mixed, threshold=0.5) == echo._replace(ptr="B", score=0.6,
                                                                   parent="b1")
    # A member matched under two keys counts once, with its best score.
    twice = [vote("A", "a2", 0.8), vote("A", "A", 0.3), vote("A", "A", 0.55)]
    assert vote_story(echo, twice, threshold=0.5).ptr == "A"
    # Next round: a2 has left A and leads its own story, which is open to x (its lead
    # agrees): x joins it as an echo. A lead that never matched keeps its node.
    assert vote_story(lead, [vote("a2", "a2", 0.8), vote("A", "A", 0.3)],
                      threshold=0.5) == Node("x", "a2", True, "echo", 0.8, "a2")
    assert vote_story(lead, chained, threshold=0.5) == lead
    first = Node("y", "y", True, "lead", None, None)
    assert vote_story(first, [vote("a2", "a2", 0.8)], threshold=0.5) == first


@dataclasses.dataclass(frozen=True)
class ScriptedSimilarity:
    """Scores pairs from a table keyed by the articles' titles (every article shares one
    blocking key): the stage's decisions on a graph written down in advance."""

    scores: tuple[tuple[str, str, float], ...]
    name: str = "scripted"
    threshold: float = 0.5

    def sketch(self, title: str, body: str, language: str) -> Sketch:
        return Sketch(language=language, terms=title.encode(), keys=("k",), words=100)

    def score(self, a: Sketch, b: Sketch) -> float:
        pair = {a.terms.decode(), b.terms.decode()}
        return next((v for x, y, v in self.scores if {x, y} == pair), 0.0)


def test_two_retellings_that_refuse_a_story_form_one():
    """Through the real stage: b matched d, an echo of a, but a says no, so b refuses
    a's story; c matched b, but a and d say no, so c refuses it too. In the second vote
    round c joins the story b opened."""
    sim = ScriptedSimilarity((("d", "a", 0.8), ("b", "d", 0.7), ("b", "a", 0.3),
                              ("c", "b", 0.9), ("c", "a", 0.3), ("c", "d", 0.2)))
    arts = [article(aid, "en", aid, f"Body of {aid}.", hour)
            for hour, aid in enumerate("adbc")]
    for rounds, expected in ((2, [("a", "a", True), ("d", "a", False), ("b", "b", True),
                                  ("c", "b", False)]),
                             # One round (before): b and c each stayed alone.
                             (1, [("a", "a", True), ("d", "a", False), ("b", "b", True),
                                  ("c", "c", True)])):
        with TestPipeline() as p:
            out = p | beam.Create(arts) | AssignStories(sim, clock=lambda: NOW,
                                                        vote_rounds=rounds)
            assert_that(out.articles | beam.Map(
                lambda a: (a.article_id, a.story_id, a.is_story_lead)), equal_to(expected))
            assert_that(out.duplicates, equal_to([]), label="no duplicates")


def test_headlines_found_apart_are_no_evidence():
    from transforms.stories.stage import compare

    long_a = item("a", 0, KURSK["en-soldiers"][2])
    long_b = item("b", 1, UNRELATED["aid"][2])
    score = SIM.score(long_b.sketch, long_a.sketch)
    assert 0.0 < score < SIM.threshold
    # Below the threshold but above the floor: an edge that counts against a story.
    assert compare(SIM, long_b, long_a, 0.0, SIM.threshold).score == round(score, 4)
    short = StoryItem("h", 2, "hh", SIM.sketch(UNRELATED["aid"][1], "", "en"))
    assert short.sketch.words < SHORT_WORDS
    assert compare(SIM, short, long_a, 0.0, SIM.threshold) is None


def test_apart_pairs_do_not_become_parents():
    from transforms.stories.messages import ItemRef
    from transforms.stories.stage import _first_node

    def nodes(messages):
        return [n for n in _first_node(("x", messages), 0.5) if isinstance(n, Node)]

    order = ItemRef(False, 5, "x", None)
    messages = [order, Edge("p", 1, 0.3, None), Edge("q", 2, 0.7, None)]
    assert [n.parent for n in nodes(messages)] == ["q"]
    apart = [order, Edge("p", 1, 0.3, None)]
    assert [n.level for n in nodes(apart)] == ["lead"]
    # A near copy is a parent whatever its score.
    near = [order, Edge("p", 1, 0.3, 0.9)]
    assert [n.level for n in nodes(near)] == ["near"]


def _vote_fixture():
    # Pointer jumping put c (best match a2) into a's story; three of its four matches are
    # in b's story, so the vote moves it there. d votes with the stories its matches had
    # before the vote (c was in a's), so it stays.
    nodes = [Node("a", "a", True, "lead", None, None), Node("a2", "a", True, "echo", 0.9, "a"),
             Node("b", "b", True, "lead", None, None), Node("b2", "b", True, "echo", 0.8, "b"),
             Node("b3", "b", True, "echo", 0.7, "b2"),
             Node("c", "a", True, "echo", 0.95, "a2", False),
             Node("d", "a", True, "echo", 0.6, "c", False)]
    edges = [("a2", Edge("a", 1, 0.9, None)), ("b2", Edge("b", 3, 0.8, None)),
             ("b3", Edge("b2", 4, 0.7, None)), ("c", Edge("a2", 2, 0.95, None)),
             ("c", Edge("b", 3, 0.6, None)), ("c", Edge("b2", 4, 0.65, None)),
             ("c", Edge("b3", 5, 0.62, None)), ("c", Edge("b3", 5, 0.62, None)),
             ("d", Edge("c", 6, 0.6, None)), ("d", Edge("a", 1, 0.59, None))]
    expected = [("a", "a", None), ("a2", "a", "a"), ("b", "b", None), ("b2", "b", "b"),
                ("b3", "b", "b2"), ("c", "b", "b2"), ("d", "a", "c")]
    return nodes, edges, expected


def test_vote_stories_in_a_batch():
    nodes, edges, expected = _vote_fixture()
    with TestPipeline() as p:
        voted = (p | "Nodes" >> beam.Create(nodes), p | "Edges" >> beam.Create(edges)) \
            | VoteStories(rounds=1)
        assert_that(voted | beam.Map(lambda n: (n.article_id, n.ptr, n.parent)),
                    equal_to(expected))


def test_vote_stories_looks_up_stories_of_earlier_windows():
    """Each article and its edges come in their own window: the stories of the earlier
    articles matched are remembered, so the vote is the batch's."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    nodes, edges, expected = _vote_fixture()
    stream = TestStream()
    for i, node in enumerate(nodes):
        t = 1_700_000_000 + 300 * i
        mine = [("node", node)] + [("edge", e) for e in edges if e[0] == node.article_id]
        stream = stream.advance_watermark_to(t).add_elements(
            [TimestampedValue(x, t) for x in mine])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        tagged = p | stream | beam.WindowInto(FixedWindows(300))
        got = (tagged | "Nodes" >> beam.FlatMap(lambda x: [x[1]] if x[0] == "node" else []),
               tagged | "Edges" >> beam.FlatMap(lambda x: [x[1]] if x[0] == "edge" else []))
        voted = got | VoteStories(rounds=1, windowfn=FixedWindows(300),
                                  window=dt.timedelta(hours=1))
        assert_that(voted | beam.Map(lambda n: (n.article_id, n.ptr, n.parent)),
                    equal_to(expected))


def test_pairs_published_days_apart_need_stronger_evidence():
    hour = 3_600_000_000
    assert later_by(0.7, 3 * hour) == later_by(0.7, int(GAP_FREE_HOURS * hour)) == 0.7
    two_days = later_by(0.7, int((GAP_FREE_HOURS + 24) * hour))
    assert two_days == pytest.approx(1 / (1 + math.exp(-(math.log(0.7 / 0.3) - GAP_PENALTY))))
    assert 0.7 > two_days > later_by(0.7, int((GAP_FREE_HOURS + 48) * hour))
    assert later_by(0.0, 100 * hour) == 0.0 and later_by(1.0, 100 * hour) == 1.0
    # Through the stage: the same pair joins when published hours apart, not days apart.
    sim = ScriptedSimilarity((("a", "b", 0.6),))
    for gap, expected in ((5, [("a", "a", True), ("b", "a", False)]),
                          (60, [("a", "a", True), ("b", "b", True)])):
        arts = [article("a", "en", "a", "Body of a.", 0),
                article("b", "en", "b", "Body of b.", gap)]
        with TestPipeline() as p:
            out = p | beam.Create(arts) | AssignStories(sim, clock=lambda: NOW)
            assert_that(out.articles | beam.Map(
                lambda a: (a.article_id, a.story_id, a.is_story_lead)), equal_to(expected))


def test_neighbourhood_level_is_the_mean_log_odds_of_the_best_pairs():
    from transforms.stories.neighbourhood import APART_FLOOR, neighbourhood_level

    floor = math.log(APART_FLOOR / (1 - APART_FLOOR))
    assert neighbourhood_level([]) == pytest.approx(floor)
    # The five best count; pairs under the floor, and missing ones, count as the floor.
    level = neighbourhood_level([0.5, 0.5, 0.5, 0.5, 0.5, 0.99, 0.01], top=5)
    assert level == pytest.approx(math.log(99) / 5)
    assert neighbourhood_level([0.5, 0.01], top=2) == pytest.approx(floor / 2)


def test_a_pair_stands_out_when_it_rises_above_both_neighbourhoods():
    from transforms.stories.neighbourhood import stands_out

    # log-odds of 0.55 is about 0.2: enough beside sparse neighbourhoods, not beside dense.
    assert stands_out(0.55, -1.0, -0.5)
    assert stands_out(0.55, 0.3, 0.4)
    assert not stands_out(0.55, 1.5, 0.5)
    assert not stands_out(0.45, 0.3, 0.4)


class _FixedScore:
    """A similarity whose every pair scores ``value`` (for the flag logic of compare)."""

    def __init__(self, value: float):
        self.value = value

    def score(self, a, b) -> float:
        return self.value


def test_compare_marks_pairs_that_may_stand_out():
    from transforms.stories.neighbourhood import STAND_OUT_FLOOR
    from transforms.stories.stage import compare

    en = item("a", 0, KURSK["en-soldiers"][2])
    uk = StoryItem("b", 1, "hb", SIM.sketch(*KURSK["uk"][1:], "uk"))
    en2 = item("c", 2, UNRELATED["aid"][2])
    headline = StoryItem("h", 3, "hh", SIM.sketch(KURSK["uk"][1], "", "uk"))
    thr = SIM.threshold

    def flag(later, earlier, score):
        edge = compare(_FixedScore(score), later, earlier, 0.15, thr, STAND_OUT_FLOOR)
        return None if edge is None else edge.stand_out

    assert flag(uk, en, 0.5) is True            # two languages, two full articles
    assert flag(uk, en, thr) is False           # at the threshold it joins anyway
    assert flag(uk, en, STAND_OUT_FLOOR - 0.01) is False
    assert flag(en2, en, 0.5) is False          # one language: the score is trusted
    assert headline.sketch.words < SHORT_WORDS
    assert flag(headline, en, 0.5) is None      # a headline is no evidence at all
    assert compare(_FixedScore(0.5), uk, en, 0.15, thr).stand_out is False  # step off


def test_choose_parent_joins_a_pair_that_stands_out():
    from transforms.stories.messages import ItemRef, Level, Peer
    from transforms.stories.neighbourhood import levelled, peer_messages
    from transforms.stories.stage import _first_node

    edge = Edge("p", 1, 0.5, None, True)
    # Both levels come from the pairs each article was compared in, on either side.
    at_p = list(levelled(("p", [Peer("x", 0.5, True), Peer("y", 0.2, False),
                                 Edge("z", 0, 0.3, None)])))
    level_p = [m for k, m in at_p if k == "p" and isinstance(m, Level)]
    assert [(k, type(m)) for k, m in at_p if k == "x"] == [("x", Level)]
    assert len(level_p) == 1 and ("y", level_p[0]) not in at_p
    at_x = list(levelled(("x", [edge, Edge("q", 0, 0.2, None), Peer("r", 0.25, False)])))
    assert ("x", edge) in at_x
    # With fewer than STAND_OUT_PAIRS compared pairs there is no level to scale by.
    assert [m for _, m in levelled(("x", [edge])) if isinstance(m, Level)] == []
    messages = [ItemRef(True, 5, "x", None), *(m for k, m in at_x + at_p if k == "x")]
    out = list(_first_node(("x", messages), 0.58))
    node = [n for n in out if isinstance(n, Node)][0]
    assert (node.level, node.parent, node.score) == ("echo", "p", 0.58)
    vote_edges = [o.value for o in out if not isinstance(o, Node)]
    assert vote_edges == [("x", Edge("p", 1, 0.58, None, False)),
                          ("x", Edge("q", 0, 0.2, None))]
    # Beside a dense neighbourhood the same pair stays apart, and so it does without levels.
    dense = [ItemRef(True, 5, "x", None), edge, Level("x", 0.2), Level("p", 2.5)]
    assert [n.level for n in _first_node(("x", dense), 0.58) if isinstance(n, Node)] == ["lead"]
    bare = [ItemRef(True, 5, "x", None), edge]
    assert [n.level for n in _first_node(("x", bare), 0.58) if isinstance(n, Node)] == ["lead"]
    assert peer_messages(("x", edge)).__next__() == ("x", edge)


def test_the_stand_out_step_is_on_with_the_encoder_only():
    from transforms.stories.neighbourhood import STAND_OUT_FLOOR

    assert AssignStories(MultilingualSimilarity())._stand_out == STAND_OUT_FLOOR
    assert AssignStories(LexicalSimilarity())._stand_out is None
    assert AssignStories(LexicalSimilarity(), stand_out=0.45)._stand_out == 0.45
    assert AssignStories(MultilingualSimilarity(), stand_out=None)._stand_out is None
    # It weighs pairs found apart, which only the vote asks for.
    assert AssignStories(MultilingualSimilarity(), vote_rounds=0)._stand_out is None
