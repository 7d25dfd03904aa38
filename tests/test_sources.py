import pytest

from transforms.sources import SourceError, read_sources


def test_url_text_yaml_and_opml_sources(tmp_path):
    text = tmp_path / "feeds.txt"
    text.write_text("# comment\nhttps://a.example/rss\n\nhttps://b.example/atom\nnot-a-url\n")
    yml = tmp_path / "feeds.yaml"
    yml.write_text("feeds:\n  - https://c.example/rss\n"
                   "  - {url: https://d.example/rss, name: D News, topic: sport, language: de}\n")
    opml = tmp_path / "subs.opml"
    opml.write_text('<?xml version="1.0"?><opml version="2.0"><head><title>s</title></head>'
                    '<body><outline text="E" title="E Times" type="rss" '
                    'xmlUrl="https://e.example/feed"/></body></opml>')
    subs = read_sources(["https://a.example/rss", str(text), str(yml), str(opml)])
    urls = [f.url for f in subs.feeds]
    assert urls == ["https://a.example/rss", "https://b.example/atom", "https://c.example/rss",
                    "https://d.example/rss", "https://e.example/feed"]
    d = subs.feeds[3]
    assert (d.name, d.topic, d.language) == ("D News", "sport", "de")
    assert subs.feeds[4].name == "E"  # OPML text attribute
    assert len(subs.problems) == 1 and "not-a-url" in subs.problems[0][1]


def test_bad_entries_are_problems_not_crashes(tmp_path):
    yml = tmp_path / "feeds.yaml"
    yml.write_text("feeds:\n  - {url: file:///etc/passwd}\n  - {name: no url}\n"
                   "  - {url: https://x.example/rss, topic: '../../etc'}\n"
                   "  - {url: https://y.example/rss, colour: blue}\n")
    subs = read_sources([str(yml)])
    assert subs.feeds == []
    assert len(subs.problems) == 4


def test_unreadable_sources_fail_early(tmp_path):
    with pytest.raises(SourceError, match="neither"):
        read_sources([str(tmp_path / "missing.txt")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("feeds: [unclosed")
    with pytest.raises(SourceError, match="invalid YAML"):
        read_sources([str(bad)])
