"""The story stage's two execution paths give the same stories.

With the default trigger every key fires once, so :class:`transforms.stories.stage.AssignStories`
uses plain DoFns; with a trigger that can fire repeatedly it keeps keyed state. Both are
run here on the fixture corpus of ``tests/test_stories.py``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger, window

from tests.test_stories import NOW, copies, corpus, expected_stories
from transforms.stories.stage import AssignStories, StoryItem, keep_first
from transforms.util import fires_once


def test_fires_once_only_for_the_default_trigger_without_lateness():
    p = beam.Pipeline()
    plain = p | "plain" >> beam.Create([1])
    assert fires_once(plain.windowing)
    fixed = plain | "fixed" >> beam.WindowInto(window.FixedWindows(60))
    assert fires_once(fixed.windowing)
    late = plain | "late" >> beam.WindowInto(window.FixedWindows(60), allowed_lateness=30)
    assert not fires_once(late.windowing)
    repeated = plain | "repeated" >> beam.WindowInto(
        window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterCount(2)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING)
    assert not fires_once(repeated.windowing)


def test_keep_first_lets_seeds_pass_and_reports_later_items():
    def it(aid, micros, seed=None):
        return StoryItem(aid, micros, "h", None, seed)

    kept, out = keep_first([it("b", 2), it("a", 1), it("s", 9, "s")], None, "content")
    assert kept == "s"
    assert [o.article_id for o in out if isinstance(o, StoryItem)] == ["s"]
    assert sorted(o.value for o in out if not isinstance(o, StoryItem)) == [
        ("a", ("content", "s", 1.0)), ("b", ("content", "s", 1.0))]
    kept, out = keep_first([it("c", 5)], "a", "content")
    assert (kept, [o.value for o in out]) == ("a", [("c", ("content", "a", 1.0))])


def test_stateful_path_gives_the_same_stories():
    with TestPipeline() as p:
        articles = (p | beam.Create(corpus() + copies())
                    # Not the default trigger, so the stage keeps keyed state.
                    | beam.WindowInto(window.GlobalWindows(), trigger=trigger.AfterWatermark(),
                                      accumulation_mode=trigger.AccumulationMode.DISCARDING))
        assert not fires_once(articles.windowing)
        out = articles | AssignStories(clock=lambda: NOW)
        assert_that(out.articles | beam.Map(lambda a: (a.article_id, a.story_id,
                                                       a.is_story_lead)),
                    equal_to(expected_stories() + [("wire", "wire", True)]), label="stories")
        assert_that(out.duplicates | beam.Map(lambda d: (d.article_id, d.level)),
                    equal_to([("exact", "content"), ("near", "near")]), label="dropped")
