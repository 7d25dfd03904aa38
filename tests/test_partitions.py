"""Partition values are safe by construction: hostile input never escapes the output folder.

The ``topic`` partition comes from a fixed table of slugs and ``date`` from a datetime,
whatever the feeds say. These tests feed hostile category strings, hostile feed-config
topics and hostile backfill dates through the real pipeline (loopback HTTP server, real
Beam runner, Parquet read back) and check every file and folder that was written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pyarrow.dataset as ds
import pytest
import yaml

from pipelines.ingest import run
from tests.conftest import article_html, rss
from transforms.sinks.parquet import article_partition, date_partition
from transforms.topics.taxonomy import MEDIA_TOPICS, TOPIC_SLUGS

HOSTILE_CATEGORIES = [
    "../../etc",
    "..\\..\\windows",
    "/etc/passwd",
    "sport/../../../escape",
    "sport\x00../../nul",
    "x" * 10_000,
    "\u0455\u0440\u043erts",  # Cyrillic look-alikes of "sports"
    "sp\u03bfrt",  # Greek omicron
    "\u202esport",  # right-to-left override
    "spo\u200brt",  # zero-width space
    "topic=sport/date=1970-01-01",
]

# Distinct texts: the story stage would drop near-identical articles.
FOOTBALL_TEXT = [
    "The striker scored twice in the second half as the home side won the derby 3-1.",
    "The coach praised his squad, and the fans in the stadium sang until the final whistle.",
    "The win lifts the club to second place in the league table before the cup final.",
]
TENNIS_TEXT = [
    "The top seed needed five sets and two tie-breaks to reach the quarter-final.",
    "Her opponent saved three match points before the champion served out the win.",
    "The tournament's centre court was full for the semi-final under the roof.",
]
CRICKET_TEXT = [
    "The batsman made a century on the second day of the test match.",
    "The bowlers took four wickets before lunch, and the captain declared the innings.",
    "The series is level with the final test to come at the home ground.",
]
HEALTH_TEXT = ["Doctors report more flu patients in hospital wards; nurses urge people "
               "to get the vaccine before the winter and see a doctor if symptoms last."]
WEATHER_TEXT = ["Forecasters warn of heavy rain and strong winds; temperatures fall "
                "below freezing overnight and snow is expected on high ground."] * 3
POLITICS_TEXT = ["Members of parliament voted on the government's budget bill after the "
                 "opposition leader called for an early election."] * 3
DATE_DIR = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")


def test_partition_functions_refuse_values_outside_the_alphabets():
    ok = SimpleNamespace(date="2024-11-23", topic="sport")
    assert article_partition(ok) == "date=2024-11-23/topic=sport"
    for topic in ("../../etc", "Sport", "sport/..", "\u0455port", "", "x" * 10_000):
        with pytest.raises(ValueError, match="refusing partition topic"):
            article_partition(SimpleNamespace(date="2024-11-23", topic=topic))
    for date in ("../../etc", "2024-11-23/../x", "2024-1-2", "", None, "23.11.2024"):
        with pytest.raises(ValueError, match="refusing partition date"):
            date_partition(SimpleNamespace(date=date))


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.slow
def test_hostile_inputs_stay_inside_the_output_folder(tmp_path, pages_server):
    items = []
    half = len(HOSTILE_CATEGORIES) // 2
    for i, (text, categories) in enumerate([(FOOTBALL_TEXT, HOSTILE_CATEGORIES[:half]),
                                            (TENNIS_TEXT, HOSTILE_CATEGORIES[half:])]):
        link = pages_server.add(f"/a/{i}.html", article_html(f"Match report {i}", text))
        items.append({"title": f"Match report {i}", "link": link, "guid": link,
                      "pubDate": "Sat, 23 Nov 2024 10:00:00 GMT", "category": categories})
    legit = pages_server.add("/a/legit.html", article_html("Budget vote", POLITICS_TEXT))
    items.append({"title": "Budget vote", "link": legit, "guid": legit,
                  "pubDate": "Sat, 23 Nov 2024 11:00:00 GMT", "category": ["Politics"]})
    # XML cannot carry a NUL byte: feedparser sees the escaped form and the raw control.
    body = rss("Hostile Outlet", items).replace("\x00", "&#0;")
    hostile_feed = pages_server.add("/hostile.xml", body, "application/rss+xml")
    w = pages_server.add("/w/1.html", article_html("Storm warning", WEATHER_TEXT))
    forced_feed = pages_server.add("/forced.xml", rss("Forced", [
        {"title": "Storm warning", "link": w, "guid": w,
         "pubDate": "Sun, 24 Nov 2024 06:00:00 GMT", "category": ["../../etc"]}]),
        "application/rss+xml")
    bad_topic_feed = pages_server.add("/bad-topic.xml", rss("Bad", []), "application/rss+xml")

    work = tmp_path / "work"
    work.mkdir()
    config = work / "feeds.yaml"
    config.write_text(yaml.safe_dump({"feeds": [
        {"url": hostile_feed, "name": "Hostile"},
        {"url": forced_feed, "name": "Forced", "topic": "weather"},
        {"url": bad_topic_feed, "topic": "../../etc"},
        {"url": bad_topic_feed + "?2", "topic": "\u0455port"},
    ]}, allow_unicode=True))
    backfill = work / "articles.jsonl"
    backfill.write_text("\n".join(json.dumps(x) for x in [
        {"url": "https://b.example/1", "text": " ".join(CRICKET_TEXT), "title": "Test match",
         "published": "2024-11-22T09:00:00Z"},
        {"url": "https://b.example/1?utm_source=x", "text": "Same article again."},
        {"url": "https://b.example/2", "text": " ".join(WEATHER_TEXT),
         "published": "../../../etc/2024"},
        {"url": "https://b.example/3", "text": " ".join(HEALTH_TEXT), "source": "../../x",
         "published": "2024-11-22T09:00:00\u202e"},
    ]) + "\n")
    before = _tree(tmp_path)
    out = tmp_path / "deep" / "er" / "out"

    _, summary = run(["--feeds", str(config), "--articles", str(backfill),
                      "--output", str(out), "--allow-private-network"], quiet=True)

    # Nothing new anywhere under tmp_path except inside the output folder.
    created = _tree(tmp_path) - before
    outside = {p for p in created if not (tmp_path / p).resolve().is_relative_to(out.resolve())
               and p not in (Path("deep"), Path("deep/er"))}
    assert not outside, sorted(map(str, outside))
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
        assert ".." not in path.relative_to(out).parts

    # Every partition folder name is in its fixed alphabet.
    for table in ("articles", "duplicates", "errors"):
        for folder in (out / table).iterdir():
            assert DATE_DIR.match(folder.name), folder
    topic_dirs = {d.name for d in (out / "articles").glob("date=*/*")}
    assert topic_dirs <= {f"topic={slug}" for slug in TOPIC_SLUGS}, topic_dirs
    for f in (out / "articles").rglob("*.parquet"):
        assert len(f.relative_to(out / "articles").parts) == 3

    rows = ds.dataset(out / "articles", format="parquet", partitioning="hive").to_table()
    rows = rows.to_pylist()
    by_title = {}
    for r in rows:
        by_title.setdefault(r["title"], []).append(r)
        assert r["topic"] in TOPIC_SLUGS
        assert r["topic_code"] == (MEDIA_TOPICS[r["topic"]][0] if r["topic"] in MEDIA_TOPICS
                                   else None)
    # Hostile categories never decide a topic: the classifier reads the text instead.
    derby = [r for r in rows if r["title"].startswith("Match report")]
    assert len(derby) == 2
    assert {(r["topic"], r["topic_source"]) for r in derby} == {("sport", "classifier")}
    assert [(r["topic"], r["topic_source"]) for r in by_title["Budget vote"]] == [
        ("politics-government", "category")]
    assert [(r["topic"], r["topic_source"]) for r in by_title["Storm warning"]] == [
        ("weather", "feed")]
    assert [(r["topic"], r["topic_source"]) for r in by_title["Test match"]] == [
        ("sport", "classifier")]
    # The long category is kept as data (truncated by the feed reader), never as a path.
    assert any(len(c) >= 100 for r in derby for c in r["categories"])

    errors = ds.dataset(out / "errors", format="parquet", partitioning="hive").to_table()
    reasons = {(e["stage"], e["reason"]) for e in errors.to_pylist()}
    assert ("read_sources", "bad_source") in reasons
    assert ("read_backfill", "bad_date") in reasons
    bad_sources = [e for e in errors.to_pylist() if e["reason"] == "bad_source"]
    assert len(bad_sources) == 2
    assert all("unknown topic" in e["message"] for e in bad_sources)
    assert summary.articles == len(rows)
