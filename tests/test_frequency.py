"""The window document-frequency table of the story stage (transforms/stories/frequency.py)."""

from __future__ import annotations

import random
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.stories.frequency import (
    MIN_ARTICLES,
    DocumentFrequencyFn,
    WeighByWindowFrequency,
    WindowFrequency,
    key_feature,
    reweigh,
    sketch_features,
    window_factor,
)
from transforms.stories.similarity import LexicalSimilarity, Sketch, cosine

SIM = LexicalSimilarity()
PLACES = ["Kharkiv", "Odesa", "Dnipro", "Sumy", "Lviv", "Poltava", "Zaporizhzhia", "Kherson"]


class Item(NamedTuple):
    """The fields of a story item that the weighing reads."""

    article_id: str
    sketch: Sketch
    seed_story: str | None = None


def report(i: int, common: str = "Kursk") -> Item:
    """A short report that names ``common`` and otherwise words of its own."""
    rng = random.Random(i)
    own = " ".join(f"{rng.choice(['Ostap', 'Marta', 'Bohdan', 'Iryna'])}{i}x{k}"
                   for k in range(4))
    place = PLACES[i % len(PLACES)]
    title = f"{common} region: {place} council meets {own.split()[0]}"
    body = (f"Officials in {common} said on Tuesday that the council in {place} met "
            f"{own}. The meeting discussed water supply, schools and {common} roads. "
            f"Residents of {place} asked for repairs before winter.")
    return Item(f"a{i:02d}", SIM.sketch(title, body, "en"))


def table_of(items: list[Item]) -> WindowFrequency:
    fn = DocumentFrequencyFn()
    acc = fn.create_accumulator()
    for item in items:
        acc = fn.add_input(acc, sketch_features(item.sketch))
    return fn.extract_output(acc)


def weight_of(packed_ids: bytes, packed_w: bytes, fid: int) -> int:
    ids = np.frombuffer(packed_ids, dtype=np.uint32).tolist()
    return packed_w[ids.index(fid)] if fid in ids else 0


def test_window_factor_keeps_rare_features_and_weighs_common_ones_down():
    assert window_factor(1, 1000) == 1.0
    assert window_factor(50, 1000) == 1.0            # 5%: still singles out a story
    assert window_factor(2, 10) == 1.0               # a small window says nothing
    assert window_factor(MIN_ARTICLES - 1, MIN_ARTICLES - 1) == 1.0
    assert 0.0 < window_factor(200, 1000) < window_factor(100, 1000) < 1.0
    assert window_factor(1000, 1000) == 0.0          # in every article: no evidence


def test_document_frequency_counts_articles_not_occurrences_in_any_order():
    fn = DocumentFrequencyFn(common_share=0.1, min_df=2)
    parts = []
    for chunk in ([[1, 1, 1, 2]] * 5, [[1, 3]] * 15, [[4]] * 10):
        acc = fn.create_accumulator()
        for ids in chunk:
            acc = fn.add_input(acc, ids)
        parts.append(acc)
    whole = fn.extract_output(fn.merge_accumulators(parts))
    reverse = fn.extract_output(fn.merge_accumulators(list(reversed(parts))))
    assert whole == reverse
    assert whole.articles == 30
    # id 1 is in 20 of 30 articles (counted once per article), id 4 in 10, id 2 in 5;
    # id 3 in 15; the share cut is 3 articles.
    assert whole.factors[1] == window_factor(20, 30, 0.1, 2)
    assert set(whole.factors) == {1, 2, 3, 4}
    small = fn.extract_output(fn.merge_accumulators([parts[0]]))
    assert small.factors == {}                       # 5 articles: under MIN_ARTICLES


def test_reweigh_lowers_what_the_window_shares_and_keeps_the_rest():
    items = [report(i) for i in range(30)]
    table = table_of(items)
    kursk = key_feature("w:kursk")
    assert table.articles == 30 and table.factors[kursk] == 0.0
    a, b = items[0].sketch, items[1].sketch
    wa, wb = reweigh(a, table), reweigh(b, table)
    assert weight_of(a.terms, a.term_weights, kursk) > 0
    assert weight_of(wa.terms, wa.term_weights, kursk) == 0
    # Two reports that share only the window's common words drift apart ...
    assert cosine(wa.terms, wa.term_weights, wb.terms, wb.term_weights) < cosine(
        a.terms, a.term_weights, b.terms, b.term_weights)
    # ... while an article's own words gain weight (the vector is normalised again).
    own = [f for f in np.frombuffer(a.terms, dtype=np.uint32).tolist()
           if f not in table.factors]
    assert own and all(weight_of(wa.terms, wa.term_weights, f)
                       >= weight_of(a.terms, a.term_weights, f) for f in own)
    # Blocking keys: the same set, the window's common ones last.
    assert sorted(wa.keys) == sorted(a.keys)
    common = [k for k in wa.keys if table.factors.get(key_feature(k), 1.0) < 1.0]
    assert common and list(wa.keys[-len(common):]) == common
    assert reweigh(a, None) is a
    assert reweigh(a, WindowFrequency(3, {})) is a


def test_reweigh_keeps_encoder_keys_last():
    items = [report(i) for i in range(30)]
    table = table_of(items)
    s = items[0].sketch
    with_vector_keys = s.__class__(**{**s.__dict__, "keys": s.keys + ("e0:1f", "e1:07")})
    assert reweigh(with_vector_keys, table).keys[-2:] == ("e0:1f", "e1:07")


def _weighed_ids(items):
    return items | "Weighed" >> beam.Map(lambda i: (i.article_id, i.sketch))


def test_weigh_by_window_frequency_in_a_batch():
    """One table over the whole batch; seeds (already written) are weighed, not counted."""
    items = [report(i) for i in range(30)]
    seed = report(99)._replace(seed_story="s99")
    table = table_of(items)
    expected = [(i.article_id, reweigh(i.sketch, table)) for i in [*items, seed]]
    with TestPipeline() as p:
        out = p | beam.Create([*items, seed]) | WeighByWindowFrequency()
        assert_that(_weighed_ids(out), equal_to(expected))


def test_weigh_by_window_frequency_per_window_of_a_stream():
    """Two poll windows: each is weighed by its own table, not by the other's."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    first = [report(i, common="Kursk") for i in range(25)]
    second = [report(i, common="Pokrovsk")._replace(article_id=f"b{i:02d}")
              for i in range(25, 50)]
    t0 = 1_700_000_000
    stream = (TestStream()
              .advance_watermark_to(t0)
              .add_elements([TimestampedValue(i, t0 + 10) for i in first])
              .advance_watermark_to(t0 + 300)
              .add_elements([TimestampedValue(i, t0 + 310) for i in second])
              .advance_watermark_to_infinity())
    expected = ([(i.article_id, reweigh(i.sketch, table_of(first))) for i in first]
                + [(i.article_id, reweigh(i.sketch, table_of(second))) for i in second])
    # The tables differ: what is common in one window is not in the other.
    assert key_feature("w:kursk") in table_of(first).factors
    assert key_feature("w:kursk") not in table_of(second).factors
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        out = (p | stream | beam.WindowInto(FixedWindows(300)) | WeighByWindowFrequency())
        assert_that(_weighed_ids(out), equal_to(expected))


WORDS = ("harbour bakery violin glacier tram orchard beekeeper lighthouse mosaic cider "
         "quarry ferry carnival pottery vineyard meteor sawmill chess tapestry kiln "
         "falcon canal bridge opera rugby barley printing choir lantern marble "
         "saddle tunnel pianist compost furnace yacht telescope velvet windmill almanac").split()


def filler(i: int):
    """An article of random words of its own that names Kursk: the window's common word."""
    from tests.test_stories import article

    rng = random.Random(1000 + i)
    words = rng.sample(WORDS, 24)
    body = (f"In Kursk, {' '.join(words[:12])} and {' '.join(words[12:])}. "
            f"Kursk {rng.choice(WORDS)} {rng.choice(WORDS)} report {i}.")
    return article(f"filler-{i:02d}", "en", f"Kursk {words[0]} {words[1]} {i}", body, i % 20)


def stage_stories(out):
    return out.articles | "Stories" >> beam.Map(
        lambda a: (a.article_id, a.story_id, a.is_story_lead))


def test_the_story_stage_weighs_each_window_in_a_batch():
    """Wired into AssignStories: the fixture stories hold among 24 articles that all name
    Kursk, and every article leaves the stage once."""
    from tests.test_stories import NOW, corpus, expected_stories
    from transforms.stories.stage import AssignStories

    fillers = [filler(i) for i in range(24)]
    with TestPipeline() as p:
        out = (p | beam.Create(corpus() + fillers)
               | AssignStories(clock=lambda: NOW, common_share=0.05))
        stories = stage_stories(out)
        assert_that(stories | beam.Filter(lambda s: not s[0].startswith("filler")),
                    equal_to(expected_stories()), label="stories")
        assert_that(stories | beam.Filter(lambda s: s[0].startswith("filler"))
                    | beam.Map(lambda s: s[0]),
                    equal_to([a.article_id for a in fillers]), label="fillers-written")
        assert_that(out.duplicates, equal_to([]), label="no-duplicates")


def test_the_story_stage_weighs_each_window_across_windows():
    """The continuous pipeline (``across_windows``): the story told over two windows of
    twenty-odd articles each gets the batch's story ids."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    from tests.test_stories import NOW, corpus, expected_stories
    from transforms.stories.stage import AssignStories

    by_id = {a.article_id: a for a in corpus()}
    windows = [[by_id[i] for i in ("en-soldiers", "battle", "strike", "en-zelensky")]
               + [filler(i) for i in range(18)],
               [by_id[i] for i in ("uk", "aid", "ru", "strike-ru")]
               + [filler(i) for i in range(18, 36)]]
    t0 = 1_700_000_000
    stream = TestStream()
    for k, group in enumerate(windows):
        t = t0 + 300 * k
        stream = stream.advance_watermark_to(t).add_elements(
            [TimestampedValue(x, t) for x in group])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        articles = p | stream | beam.WindowInto(FixedWindows(300))
        out = articles | AssignStories(clock=lambda: NOW, across_windows=True,
                                       common_share=0.05)
        stories = stage_stories(out)
        assert_that(stories | beam.Filter(lambda s: not s[0].startswith("filler")),
                    equal_to(expected_stories()), label="stories")
        assert_that(stories | beam.Filter(lambda s: s[0].startswith("filler"))
                    | beam.Map(lambda s: s[0]),
                    equal_to([f"filler-{i:02d}" for i in range(36)]), label="fillers")
        assert_that(out.duplicates, equal_to([]), label="no-duplicates")
