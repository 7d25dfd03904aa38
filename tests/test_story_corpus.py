"""The same-domain story corpus (tests/fixtures/stories/): its shape, and the stage on it.

The corpus is one week of war news from one region in four languages, plus a second
domain, with a gold ``event`` label per article (see the folder's README). These tests
check that the three sets keep the shape the benchmark relies on
(``bench/bench_stories.py week --set dev|dev2|test`` reports the figures).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from transforms.feeds.backfill import parse_backfill_line
from transforms.fetching.urls import canonical_url, host_of

FIXTURES = Path(__file__).parent / "fixtures" / "stories"
FIELDS = {"id", "url", "source", "language", "published", "title", "text", "event"}
LANGUAGES = {"en", "uk", "ru", "de"}
SECOND_DOMAIN = {"dev": "football-", "dev2": "tennis-", "test": "biathlon-"}
"""Event labels of the second domain start with this prefix; the others are war news."""
SEED_EVENT = "kursk-hold-until-inauguration"
MINIMA = {"dev": (40, 10, 0), "dev2": (56, 16, 4), "test": (60, 15, 4)}
"""Per set: articles, war events and second-domain events it must at least hold."""
FETCHED = dt.datetime(2024, 12, 1, tzinfo=dt.UTC)
READ_AT = dt.datetime(2024, 12, 20, tzinfo=dt.UTC)
"""Fetch time for reading the lines back: after every set's last date (dev2 ends on 15
December), so that no ``published`` date counts as one in the future."""
SETS = ("dev", "dev2", "test")


def load(name: str) -> list[dict]:
    lines = (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("name", SETS)
def test_each_set_is_well_formed(name):
    rows = load(name)
    n_articles, n_war, n_other = MINIMA[name]
    assert len(rows) >= n_articles
    for r in rows:
        assert set(r) == FIELDS, r.get("id")
        assert all(isinstance(r[k], str) and r[k].strip() for k in FIELDS), r["id"]
        assert r["language"] in LANGUAGES, r["id"]
        assert 60 <= len(r["text"].split()) <= 220, (r["id"], len(r["text"].split()))
        when = dt.datetime.fromisoformat(r["published"].replace("Z", "+00:00"))
        assert when.utcoffset() == dt.timedelta(0), r["id"]
        # Each line is a valid backfill line; the extra fields (id, event) are ignored.
        entry = parse_backfill_line(json.dumps(r, ensure_ascii=False), READ_AT)
        assert (entry.body, entry.published_at, entry.source) == (r["text"], when, r["source"])
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({canonical_url(r["url"]) for r in rows}) == len(rows)
    events = defaultdict(list)
    for r in rows:
        events[r["event"]].append(r)
    other = [e for e in events if e.startswith(SECOND_DOMAIN[name])]
    war = [e for e in events if e not in other]
    assert len(war) >= n_war and len(other) >= n_other
    for event, members in events.items():
        assert 1 <= len(members) <= 6, event
        # An event is told by several outlets, never twice by one.
        assert len({m["source"] for m in members}) == len(members), event
        assert len({host_of(m["url"]) for m in members}) == len(members), event
        days = sorted(m["published"][:10] for m in members)
        assert dt.date.fromisoformat(days[-1]) - dt.date.fromisoformat(days[0]) <= \
            dt.timedelta(days=3), event
    assert sum(len(m) == 1 for m in events.values()) >= 1
    war_days = sorted({r["published"][:10] for r in rows if r["event"] in war})
    assert dt.date.fromisoformat(war_days[-1]) - dt.date.fromisoformat(war_days[0]) <= \
        dt.timedelta(days=7)
    # Every language is well represented, and several events are told in 3-4 of them.
    languages = Counter(r["language"] for r in rows)
    assert set(languages) == LANGUAGES
    assert min(languages.values()) >= len(rows) // 8, languages
    assert sum(len({m["language"] for m in ms}) >= 3 for ms in events.values()) >= 5


@pytest.mark.parametrize("one, other", [("dev", "test"), ("dev2", "test"), ("dev", "dev2")])
def test_sets_share_no_event_outlet_or_week(one, other):
    a, b = load(one), load(other)
    assert not {r["event"] for r in a} & {r["event"] for r in b}
    assert not {r["source"] for r in a} & {r["source"] for r in b}
    assert not {host_of(r["url"]) for r in a} & {host_of(r["url"]) for r in b}
    assert not {r["published"][:10] for r in a} & {r["published"][:10] for r in b}
    assert not {r["id"] for r in a} & {r["id"] for r in b}


def test_the_test_set_alone_holds_the_seed_story():
    test = load("test")
    seed = [r for r in test if r["event"] == SEED_EVENT]
    assert 4 <= len(seed) <= 5
    assert len({r["language"] for r in seed}) >= 3
    assert not any(r["event"] == SEED_EVENT for name in ("dev", "dev2") for r in load(name))


def test_dev2_holds_the_hard_cases_it_was_written_for():
    """Ukrainian retellings, same-language pairs, and one week of 9-15 December 2024."""
    rows = load("dev2")
    assert all(r["id"].startswith("dev2-") for r in rows)
    assert 56 <= len(rows) <= 64
    assert sum(r["language"] == "uk" for r in rows) >= 18
    events = defaultdict(list)
    for r in rows:
        events[r["event"]].append(r)
    other = [e for e in events if e.startswith(SECOND_DOMAIN["dev2"])]
    assert 4 <= len(other) <= 5
    war_days = {r["published"][:10] for r in rows if r["event"] not in other}
    assert min(war_days) >= "2024-12-09" and max(war_days) <= "2024-12-15"
    # Events told in Ukrainian and in at least one other language.
    assert sum({"uk"} < {m["language"] for m in ms} for ms in events.values()) >= 8
    # Two or three events with two tellings in one language.
    twice = [e for e, ms in events.items() if max(Counter(m["language"] for m in ms).values()) > 1]
    assert 2 <= len(twice) <= 3, twice
    for r in rows:
        assert 60 <= len(r["text"].split()) <= 180, r["id"]
        assert host_of(r["url"]).endswith(".example") and r["published"].endswith("Z"), r["id"]


def bcubed(pred: dict[str, str], gold: dict[str, str]) -> tuple[float, float, float]:
    """BCubed precision, recall and F1 of the predicted story of each article."""
    ids = sorted(gold)
    pairs = Counter((pred[i], gold[i]) for i in ids)
    psize, gsize = Counter(pred[i] for i in ids), Counter(gold.values())
    p = sum(c * c / psize[pl] for (pl, _), c in pairs.items()) / len(ids)
    r = sum(c * c / gsize[gl] for (_, gl), c in pairs.items()) / len(ids)
    return p, r, 2 * p * r / (p + r)


# The goal is BCubed F1 0.92 with nothing foreign in the seed story. The default reaches
# P 0.981, R 0.817, F1 0.891 with one foreign article in stories that hold a seed-event
# article (README, Stories; before the stand-out step P 0.981, F1 0.866), earlier
# P 0.966, R 0.757, F1 0.849 with two, the release before that (Ukrainian unread by the encoder)
# P 0.966, F1 0.799 with two; multilingual-e5 P 0.941, R 0.732, F1 0.823. The floors sit
# below each, so that precision, the first quality of this stage, cannot slip back
# unnoticed.
FLOORS = {"multilingual": (0.95, 0.87, 1), "multilingual-e5": (0.92, 0.80, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("similarity", sorted(FLOORS))
def test_the_stage_keeps_the_week_apart_and_the_seed_story_clean(tmp_path, similarity):
    """The test set in one batch through ``newsbeam ingest --articles``.

    An article dropped as a copy counts in the story of the article it copies.
    """
    import pyarrow.dataset as ds

    from pipelines.ingest import run

    rows = load("test")
    src = tmp_path / "week.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    out = tmp_path / "out"
    _, summary = run(["--articles", str(src), "--output", str(out), "--runner", "FnApiRunner",
                      "--story-similarity", similarity], clock=lambda: FETCHED, quiet=True)
    assert summary.balanced and summary.entries_read == len(rows)
    assert summary.entry_errors == 0
    by_url = {canonical_url(r["url"]): r["id"] for r in rows}
    articles = ds.dataset(out / "articles", format="parquet", partitioning="hive").to_table()
    written = {a["article_id"]: a for a in articles.to_pylist()}
    story = {by_url[a["url"]]: a["story_id"] for a in written.values()}
    if (out / "duplicates").exists():
        copies = ds.dataset(out / "duplicates", format="parquet", partitioning="hive").to_table()
        for d in copies.to_pylist():
            kept = written.get(d["duplicate_of"])
            story[by_url[d["url"]]] = kept["story_id"] if kept else d["duplicate_of"]
    gold = {r["id"]: r["event"] for r in rows}
    assert set(story) == set(gold)
    # No article of another event shares a story_id with any article of the seed story.
    seed_stories = {story[i] for i in gold if gold[i] == SEED_EVENT}
    foreign = sorted(f"{i} ({gold[i]})" for i in gold
                     if story[i] in seed_stories and gold[i] != SEED_EVENT)
    p, r, f1 = bcubed(story, gold)
    min_p, min_f1, max_foreign = FLOORS[similarity]
    assert p >= min_p and f1 >= min_f1 and len(foreign) <= max_foreign, \
        f"BCubed P {p:.3f} R {r:.3f} F1 {f1:.3f}; other events in the seed story: {foreign}"


def _stories_of(rows: list[dict], folder: Path, **options) -> dict[str, str]:
    """The story of each row after one batch through the real stage (FnApiRunner)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.stories.similarity import MultilingualSimilarity
    from transforms.stories.stage import AssignStories

    from .test_stories import article

    articles = []
    for r in rows:
        when = dt.datetime.fromisoformat(r["published"].replace("Z", "+00:00"))
        one = article(r["id"], r["language"], r["title"], r["text"], 0)
        articles.append(dataclasses.replace(one, published_at=when, fetched_at=when,
                                            date=when.strftime("%Y-%m-%d")))
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        out = (p | beam.Create(articles)
               | AssignStories(MultilingualSimilarity(), clock=lambda: FETCHED, **options))
        _ = (out.articles | beam.Map(lambda a: json.dumps([a.article_id, a.story_id]))
             | beam.io.WriteToText(str(folder / "stories")))
    found = dict(json.loads(line) for path in folder.glob("stories*")
                 for line in path.read_text(encoding="utf-8").splitlines())
    assert set(found) == {r["id"] for r in rows}  # nothing lost (no copies in the corpus)
    return found


@pytest.mark.slow
def test_standing_out_joins_retellings_across_languages_and_nothing_else(tmp_path):
    """dev2 (a design set) in one batch, with and without the stand-out step: pairs under
    the threshold that stand out of both neighbourhoods join more same-event retellings
    across languages, and no article of another event."""
    rows = load("dev2")
    gold = {r["id"]: r["event"] for r in rows}
    language = {r["id"]: r["language"] for r in rows}
    counts = {}
    for stand_out in (None, "default"):
        folder = tmp_path / str(stand_out)
        story = _stories_of(rows, folder, **({} if stand_out else {"stand_out": None}))
        ids = sorted(story)
        same_cross = sum(story[a] == story[b] and gold[a] == gold[b]
                         and language[a] != language[b]
                         for i, a in enumerate(ids) for b in ids[i + 1:])
        wrong = sum(story[a] == story[b] and gold[a] != gold[b]
                    for i, a in enumerate(ids) for b in ids[i + 1:])
        counts[stand_out] = (same_cross, wrong, bcubed(story, gold))
    (before, wrong_before, _), (after, wrong_after, (p, _, _)) = counts[None], counts["default"]
    assert after > before and wrong_after <= wrong_before, counts
    assert p >= 0.92, counts
