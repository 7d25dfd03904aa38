import pytest

from transforms.fetching.urls import canonical_url, host_of, is_http_url, stable_id


@pytest.mark.parametrize("raw, expected", [
    ("HTTP://Example.COM:80/a/b?utm_source=x&b=2&a=1&fbclid=z&gclid=q#frag",
     "http://example.com/a/b?a=1&b=2"),
    ("https://News.Example.org/story?utm_medium=rss&utm_campaign=c#top",
     "https://news.example.org/story"),
    ("https://example.org", "https://example.org/"),
    ("http://127.0.0.1:8000/Path/Case.html?id=7", "http://127.0.0.1:8000/Path/Case.html?id=7"),
])
def test_canonical_url(raw, expected):
    assert canonical_url(raw) == expected


def test_canonical_url_is_idempotent():
    once = canonical_url("https://WWW.Example.com/x/?b=1&a=2&utm_term=q#f")
    assert canonical_url(once) == once


@pytest.mark.parametrize("bad", ["ftp://example.org/x", "file:///etc/passwd", "javascript:x",
                                 "data:text/html,hi", "/relative/path", ""])
def test_non_http_urls_are_refused(bad):
    assert not is_http_url(bad)
    with pytest.raises(ValueError, match="http"):
        canonical_url(bad)


def test_stable_id_is_stable_and_separates_parts():
    assert stable_id("a", "b") == stable_id("a", "b")
    assert len(stable_id("x")) == 16
    assert stable_id("ab", "c") != stable_id("a", "bc")


def test_host_of():
    assert host_of("http://Example.org:8080/x") == "example.org:8080"
    assert host_of("not a url") == ""


@pytest.mark.parametrize("bad", ["http://a.example:99999/", "http://a.example:port/",
                                 "http://[::1/", "https://a.example:-1/"])
def test_urls_with_bad_ports_or_hosts_are_not_http_urls(bad):
    assert not is_http_url(bad)
    with pytest.raises(ValueError):
        canonical_url(bad)
