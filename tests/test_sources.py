import pytest

from transforms.feeds.sources import SourceError, read_sources


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


def test_missing_sources_fail_early(tmp_path):
    with pytest.raises(SourceError, match="neither"):
        read_sources([str(tmp_path / "missing.txt")])


def test_files_that_do_not_parse_are_problems_and_the_others_are_read(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("feeds: [unclosed")
    not_xml = tmp_path / "subs.opml"
    not_xml.write_text("this is not XML at all")
    html = tmp_path / "page.opml"
    html.write_text("<html><body>a web page saved as .opml</body></html>")
    mixed = tmp_path / "feeds.txt"
    mixed.write_bytes(b"https://a.example/rss\nhttps://b.example/\xff\xfe\n")
    odd = tmp_path / "odd.yaml"
    odd.write_text('feeds:\n  - {url: https://c.example/rss, name: {nested: map}}\n'
                   '  - "https://d.example/\\ud800"\n  - {url: https://e.example/rss, 7: x}\n')
    subs = read_sources([str(p) for p in (bad_yaml, not_xml, html, mixed, odd)])
    assert [f.url for f in subs.feeds] == ["https://a.example/rss"]
    messages = dict(subs.problems)
    assert messages[str(bad_yaml)].startswith("invalid YAML: ")
    assert "not XML" in messages[str(not_xml)]
    assert "root element is <html>" in messages[str(html)]
    assert messages[f"{mixed}:2"] == "line is not UTF-8"
    assert messages[f"{odd}#feeds[0]"] == "name must be text"
    assert "unpaired surrogate" in messages[f"{odd}#feeds[1]"]
    assert "unknown keys ['7']" in messages[f"{odd}#feeds[2]"]
    assert all("\n" not in m for m in messages.values())
