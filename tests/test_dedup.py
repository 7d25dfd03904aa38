"""DropExactDuplicates on a real Beam runner (TestPipeline + assert_that)."""

import datetime as dt
import random

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import Entry
from transforms.stories.exact import DropExactDuplicates, guid_key

NOW = dt.datetime(2024, 11, 24, 12, tzinfo=dt.UTC)


def entry(url, guid, feed="https://f.example/rss", hour=None):
    published = None if hour is None else dt.datetime(2024, 11, 23, hour, tzinfo=dt.UTC)
    return Entry(entry_id="id-" + url, url=url, link=url, guid=guid, feed_url=feed, source="s",
                 title=url, summary="", content="", published_at=published, authors=(),
                 categories=(), language_hint=None, topic_hint=None, fetched_at=NOW)


ENTRIES = [
    entry("https://a.example/1", "g1", hour=9),
    entry("https://a.example/1", "other", feed="https://g.example/rss", hour=8),  # same URL
    entry("https://a.example/2", "https://a.example/?p=2", hour=10),
    entry("https://a.example/2b", "https://a.example/?p=2", hour=11),  # same global GUID
    entry("https://a.example/3", "7", hour=12),
    entry("https://b.example/3", "7", feed="https://g.example/rss", hour=12),  # local GUIDs
]


def run(entries):
    with TestPipeline() as p:
        unique, dups = p | beam.Create(entries) | DropExactDuplicates()
        assert_that(unique | "U" >> beam.Map(lambda e: (e.url, e.feed_url)), equal_to([
            ("https://a.example/1", "https://g.example/rss"),  # earliest published wins
            ("https://a.example/2", "https://f.example/rss"),
            ("https://a.example/3", "https://f.example/rss"),
            ("https://b.example/3", "https://g.example/rss"),
        ]), label="unique")
        assert_that(dups | "D" >> beam.Map(lambda d: (d.url, d.level, d.duplicate_of)),
                    equal_to([
                        ("https://a.example/1", "url", "id-https://a.example/1"),
                        ("https://a.example/2b", "guid", "id-https://a.example/2"),
                    ]), label="duplicates")


def test_url_and_guid_duplicates_are_dropped_deterministically():
    run(ENTRIES)
    shuffled = list(ENTRIES)
    random.Random(7).shuffle(shuffled)
    run(shuffled)


def test_guid_scope():
    assert guid_key(entry("https://x/1", "tag:x.example,2024:1")) == "tag:x.example,2024:1"
    assert guid_key(entry("https://x/1", "42")).endswith(" 42")


def test_repeating_trigger_uses_keyed_state_and_still_keeps_one_per_key():
    from apache_beam.transforms import trigger, window

    from transforms.stories.exact import KeepFirstPerKey, KeepFirstPerKeyFn
    from transforms.util import fires_once

    with TestPipeline() as p:
        entries = (p | beam.Create(ENTRIES[:2] + ENTRIES[:2])
                   | beam.WindowInto(window.GlobalWindows(),
                                     trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                                     accumulation_mode=trigger.AccumulationMode.DISCARDING))
        stage = KeepFirstPerKey("url", lambda e: e.url)
        result = entries | stage
        assert_that(result.unique | "U" >> beam.Map(lambda e: e.url),
                    equal_to(["https://a.example/1"]), label="one kept")
        assert_that(result.duplicates | "D" >> beam.Map(lambda d: d.level),
                    equal_to(["url"] * 3), label="three dropped")
        # A repeating trigger fires keys again: the stateful DoFn must be the one used.
        assert not fires_once(entries.windowing)
        nodes = [t for t in _parts(p) if isinstance(t.transform, beam.ParDo)
                 and isinstance(t.transform.fn, KeepFirstPerKeyFn)]
        assert nodes
        # Keyed state is partitioned by encoded key: the key coder must be deterministic.
        for node in nodes:
            (pcoll,) = node.main_inputs.values()
            coder = beam.coders.registry.get_coder(pcoll.element_type)
            assert coder.is_kv_coder() and coder.key_coder().is_deterministic()


def _parts(pipeline):
    stack = [pipeline.transforms_stack[0]]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.parts)
