"""The whole ingest pipeline over a feed whose entries point at every fault, plus good pages.

Proof that nothing is lost under faults: the run completes; each bad URL has exactly one
error record with the right stage, reason, HTTP status and attempt count (and a matching
counter); each good article is written and reads back from Parquet with the right text,
Cyrillic included, whatever charset its server claimed.

The feed host ``public.test`` is pinned to 127.0.0.1 with the private-network guard ON,
so redirects to 127.0.0.1 and 169.254.169.254 meet the real SSRF check.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow.dataset as ds
import pytest

from pipelines.ingest import IngestConfig, build, counters
from pipelines.summary import cleanup_staging
from schemas import FeedSpec
from tests.conftest import rss
from tests.faults import FaultServer, article_page
from transforms.feeds.sources import Subscriptions
from transforms.fetching.http import FetchPolicy
from transforms.fetching.urls import canonical_url

pytestmark = pytest.mark.slow

RU = [
    "В порту Северной бухты в четверг открыли новый причал для паромов, которые ходят на "
    "острова два раза в неделю даже зимой, и жители встретили это решение с радостью.",
    "Городской совет сообщил, что ремонт обошёлся дешевле, чем ожидалось, потому что камень "
    "старого пирса удалось использовать повторно, а работы закончили за три месяца.",
    "Капитан парома рассказал журналистам, что новый причал защищён от штормов и позволит "
    "принимать суда в любую погоду, что особенно важно для рыбаков и медсестёр.",
]
UK = [
    "Школи Харківщини повертаються до очного навчання після ремонту укриттів, повідомили в "
    "обласній адміністрації у вівторок, і батьки чекали на це рішення від початку року.",
    "За словами директорки гімназії, укриття тепер мають вентиляцію, воду та світло, тож "
    "уроки під час тривоги тривають без перерви, а діти не пропускають контрольних робіт.",
    "Учителі кажуть, що живе спілкування з учнями повернуло класам енергію, якої бракувало "
    "під час дистанційного навчання, і бібліотека знову відкрита щодня після уроків.",
]

RU2 = [
    "Областная библиотека в субботу побила рекорд посещаемости: на книжную ярмарку пришли "
    "больше шести тысяч читателей, многие из них приехали из соседних сёл на автобусах.",
    "Директор библиотеки объяснила успех тем, что издательства привезли новинки по ценам "
    "ниже магазинных, а детские писатели весь день читали вслух и подписывали книги.",
    "В следующем году ярмарку планируют перенести в городской парк, чтобы поставить больше "
    "палаток и устроить вечерние встречи с поэтами под открытым небом у реки.",
]
UK2 = [
    "Сапери розмінували ще дві тисячі гектарів полів на Харківщині, і фермери вже почали "
    "сіяти озиму пшеницю там, де два роки тому не можна було навіть пройти стежкою.",
    "Керівник групи розмінування розповів, що роботу прискорили нові машини, які керуються "
    "дистанційно, а місцеві жителі допомагали показувати місця, де бачили снаряди.",
    "Агрономи очікують, що врожай на розмінованих полях буде меншим через пошкоджений ґрунт, "
    "але господарі кажуть, що повернення до праці на своїй землі важливіше за прибуток.",
]

# path → (stage, reason, HTTP status, attempts)
BAD = {
    "/status/500": ("fetch_page", "http_500", 500, 3),
    "/status/404": ("fetch_page", "http_404", 404, 1),
    "/status/410": ("fetch_page", "http_410", 410, 1),
    "/always-429/1": ("fetch_page", "http_429", 429, 3),
    "/always-429/3600": ("fetch_page", "http_429", 429, 1),
    "/stall": ("fetch_page", "timeout", 200, 3),
    "/trickle": ("fetch_page", "timeout", 200, 3),
    "/reset": ("fetch_page", "connection_error", 200, 3),
    "/truncated-gzip": ("fetch_page", "bad_compression", 200, 1),
    "/gzip-bomb": ("fetch_page", "decompression_bomb", 200, 1),
    "/huge": ("fetch_page", "too_large", 200, 1),
    "/huge-declared": ("fetch_page", "too_large", 200, 1),
    "/binary": ("fetch_page", "bad_content_type", 200, 1),
    "/binary-as-html": ("fetch_page", "binary_content", 200, 1),
    "/loop/a": ("fetch_page", "redirect_loop", None, 1),
    "/chain/0": ("fetch_page", "too_many_redirects", None, 1),
    "/redirect/loopback": ("fetch_page", "blocked_address", None, 1),
    "/redirect/metadata": ("fetch_page", "blocked_address", None, 1),
    "/redirect/localhost": ("fetch_page", "blocked_address", None, 1),
    "/redirect/file": ("fetch_page", "unsupported_scheme", None, 1),
    "/private/report": ("fetch_page", "robots_disallowed", None, 0),
}
# path → a phrase the written body must contain
GOOD = {
    "/good/english": "Pier repairs approved",
    "/flaky/1/k": None,
    "/retry-after/1/k": None,
    "/gzip-ok": None,
    "/cyr/utf8-claimed-latin1": "новый причал для паромов",
    "/cyr/cp1251-claimed-latin1": "побила рекорд посещаемости",
    "/cyr/cp1251-no-charset": "повертаються до очного навчання",
    "/cyr/cp1251-meta": "розмінували ще дві тисячі гектарів",
}


def _serve(server: FaultServer) -> str:
    base = server.url("public.test", "")
    server.redirects.update({
        "loopback": f"http://127.0.0.1:{server.port}/good/english",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "localhost": f"http://localhost:{server.port}/good/english",
        "file": "file:///etc/passwd",
    })
    server.add("/good/english", article_page("Pier repairs approved"))
    ru_html, uk_html = article_page("Причал", RU), article_page("Школи", UK)
    server.add("/cyr/utf8-claimed-latin1", ru_html.encode("utf-8"),
               content_type="text/html; charset=iso-8859-1")
    server.add("/cyr/cp1251-claimed-latin1", article_page("Ярмарка", RU2).encode("cp1251"),
               content_type="text/html; charset=ISO-8859-1")
    server.add("/cyr/cp1251-no-charset", uk_html.encode("cp1251"), content_type="text/html")
    server.add("/cyr/cp1251-meta",
               article_page("Поля", UK2, meta_charset="windows-1251").encode("cp1251"),
               content_type="text/html")
    items = [{"title": f"Item {p}", "link": base + p, "guid": p} for p in [*BAD, *GOOD]]
    items.append({"title": "Not http", "link": "ftp://public.test/pub/file.txt", "guid": "ftp"})
    server.add("/feed.xml", rss("Fault Gazette", items), content_type="application/rss+xml")
    return base + "/feed.xml"


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "out"
    with FaultServer(stall_seconds=10.0) as server:
        feed = _serve(server)
        policy = FetchPolicy(
            host_overrides=(("public.test", "127.0.0.1"),), allow_private_network=False,
            connect_timeout=1.0, read_timeout=1.0, total_timeout=1.5, backoff_initial=0.2,
            backoff_max=0.4, max_retry_after=5.0, per_host_concurrency=2, per_host_delay=0.0)
        config = IngestConfig(output=str(out), run_id="faults", policy=policy,
                              subscriptions=Subscriptions(feeds=[FeedSpec(url=feed)]),
                              fetch_threads=8)
        pipeline = beam.Pipeline()
        build(pipeline, config)
        result = pipeline.run()
        result.wait_until_finish()
        cleanup_staging(str(out), "faults")
        peak = server.peak[f"public.test:{server.port}"]
        base = server.url("public.test", "")
        hits = dict(server.hits)
    read = {name: ds.dataset(out / name, format="parquet", partitioning="hive").to_table()
            .to_pylist() for name in ("articles", "errors")}
    return read, counters(result), base, peak, hits


def test_each_bad_url_has_exactly_one_error_with_the_right_reason(fault_run):
    read, _, base, _, _ = fault_run
    by_url: dict[str, list] = {}
    for r in read["errors"]:
        by_url.setdefault(r["url"], []).append(r)
    for path, (stage, reason, status, attempts) in BAD.items():
        records = by_url.get(canonical_url(base + path), [])
        assert len(records) == 1, (path, records)
        (r,) = records
        assert (r["stage"], r["reason"], r["http_status"], r["attempts"]) == (
            stage, reason, status, attempts), path
        assert r["level"] == "entry" and r["message"]
    (ftp,) = by_url["ftp://public.test/pub/file.txt"]
    assert (ftp["stage"], ftp["reason"]) == ("parse_feed", "unsupported_scheme")
    assert len(read["errors"]) == len(BAD) + 1


def test_every_good_article_is_written(fault_run):
    read, _, base, _, _ = fault_run
    articles = {a["url"]: a for a in read["articles"]}
    assert set(articles) == {canonical_url(base + p) for p in GOOD}
    for path, phrase in GOOD.items():
        article = articles[canonical_url(base + path)]
        assert article["body_source"] == "page", path
        if phrase:
            assert phrase in article["body"], (path, article["body"][:200])
            assert "Ð" not in article["body"] and "Ï" not in article["body"]


def test_counters_match_the_records(fault_run):
    read, c, _, _, _ = fault_run
    reasons: dict[str, int] = {}
    for _, reason, _, _ in BAD.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        assert c.get(f"page_error_{reason}") == n, reason
    assert c["pages_failed"] == len(BAD)
    assert c["entries_read"] == len(BAD) + len(GOOD) + 1
    assert c["pages_fetched"] == len(GOOD)


def test_manners_were_kept(fault_run):
    _, _, _, peak, hits = fault_run
    assert peak <= 2
    host = next(h for h, _ in hits)
    # Once for the feed stage and once for the page stage: each fetcher caches its own.
    assert hits[(host, "/robots.txt")] <= 2
    assert (host, "/private/report") not in hits
    # The SSRF targets were never reached under any name.
    assert not any(path.startswith("/latest") for _, path in hits)
    assert {h: n for (h, p), n in hits.items() if p == "/good/english"} == {host: 1}
