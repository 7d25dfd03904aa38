import datetime as dt

from schemas import Entry
from tests.conftest import article_html
from transforms.extraction.extract import Extracted, build_article, choose_body, extract_page
from transforms.extraction.text import clean_text, content_hash, html_to_text

NOW = dt.datetime(2024, 11, 24, 12, tzinfo=dt.UTC)


def entry(**kw) -> Entry:
    base = dict(entry_id="e1", url="https://x.example/a", link="https://x.example/a", guid="g",
                feed_url="https://x.example/rss", source="X", title="Feed title",
                summary="Short summary.", content="", published_at=None, authors=(),
                categories=(), language_hint=None, topic_hint=None, fetched_at=NOW)
    base.update(kw)
    return Entry(**base)


PARAS = [f"Paragraph {i}: the regional council approved a new budget for schools and roads "
         f"after a long debate that lasted well into the evening." for i in range(5)]


def test_extract_page_keeps_article_and_drops_boilerplate():
    ex = extract_page(article_html("Council budget", PARAS), "https://x.example/a")
    assert "regional council approved" in ex.body
    assert "Subscribe" not in ex.body and "Home" not in ex.body
    assert ex.title == "Council budget"
    assert ex.authors == ("Test Writer",)


def test_extract_page_survives_garbage():
    for junk in ["", "<<<>>>", "\x00\x01binary", "<html><body></body></html>"]:
        assert extract_page(junk, "https://x.example/") .body == ""


def test_choose_body_prefers_page_then_feed_content_then_summary():
    long_page = "x" * 300
    assert choose_body(long_page, entry()) == (long_page, "page")
    assert choose_body("", entry(content="Full feed text " * 20)) == (
        "Full feed text " * 20, "feed_content")
    assert choose_body("", entry()) == ("Short summary.", "feed_summary")
    assert choose_body("", entry(summary="")) == ("", "none")
    assert choose_body("", entry(body="backfilled")) == ("backfilled", "backfill")


def test_build_article_dates_and_partition():
    ex = Extracted("Body " * 100, "Page title", ("A",), None, ("Politics",))
    a = build_article(entry(published_at=dt.datetime(2024, 11, 23, 8, tzinfo=dt.UTC)), ex, NOW)
    assert a.date == "2024-11-23" and a.title == "Page title" and a.body_source == "page"
    assert a.story_id == a.article_id and a.is_story_lead and a.categories == ["Politics"]
    # No published date anywhere: the fetch date decides the partition.
    b = build_article(entry(), ex, NOW)
    assert b.published_at is None and b.date == "2024-11-24"
    assert build_article(entry(summary=""), None, NOW) is None


def test_text_helpers():
    assert html_to_text("<p>One</p><p>Two <b>bold</b></p><script>x()</script>") == \
        "One\n\nTwo bold"
    assert clean_text("  a \t b \n\n\n c\x00 ") == "a b\n\nc"
    assert content_hash("Hello,   World!") == content_hash("hello world")
    assert content_hash("Hello world") != content_hash("Hello there world")
