"""Throughput of the ingestion pipeline against the same work in a plain Python loop.

A generated site (20 feeds x 100 articles by default, served from memory by a separate
process on 127.0.0.1) is ingested three ways, interleaved in one run so that machine
noise hits all of them alike:

* ``cpu``: every page downloaded first (not timed), then parse, extract, detect language,
  assign topic (category map + classifier), sketch for story similarity and write one
  Parquet file in a plain loop: the per-article CPU work alone, one core, no Beam;
* ``loop``: the same loop fetching as it goes (a plain sequential script);
* ``beam``: ``newsbeam ingest`` on the default DirectRunner (one worker);
* ``beam-2w``: the same with ``--direct_running_mode=multi_processing
  --direct_num_workers=2``.

Each measurement runs in a fresh subprocess (so peak RSS is its own) and prints
articles/s, the ratio to the loop, and peak memory. Usage::

    python bench/bench_pipeline.py [--feeds 20 --per-feed 100 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import child_command, ingest_site, site_arguments, synthetic_site  # noqa: E402


def plain_loop(base: str, feeds: int, out: str, similarity_name: str,
               prefetch: bool = False) -> tuple[int, float]:
    """The per-article work of the pipeline, sequential, without Beam.

    With ``prefetch`` every feed and page is downloaded first and only the CPU work
    (parse, extract, language, topic, Parquet) is timed: the one-core limit.
    Returns (articles, seconds timed).
    """
    import datetime as dt

    import pyarrow.parquet as pq

    from schemas import ARTICLE_SCHEMA, FeedSpec
    from transforms.extraction.extract import PAGE_ACCEPT, PAGE_TYPES, build_article, extract_page
    from transforms.extraction.language import detect_language
    from transforms.feeds.parse import FEED_ACCEPT, parse_feed
    from transforms.fetching.http import FetchPolicy, HttpClient, decode_html
    from transforms.sinks.parquet import to_rows
    from transforms.stories.similarity import make_similarity
    from transforms.topics.assign import assign_topic, load_category_map
    from transforms.topics.classify import TopicClassifier

    client = HttpClient(FetchPolicy(allow_private_network=True))
    mapping = load_category_map()
    classifier = TopicClassifier()
    similarity = make_similarity(similarity_name)
    sketches = []
    cache: dict[str, object] = {}

    def get(url: str, **kw: object):
        return cache[url] if url in cache else client.get(url, **kw)

    if prefetch:
        import re

        for f in range(feeds):
            url = f"{base}/outlet{f}/feed.xml"
            cache[url] = client.get(url, accept=FEED_ACCEPT)
            for link in re.findall(rb"<link>([^<]+\.html)</link>", cache[url].body):
                cache[link.decode()] = client.get(link.decode(), accept=PAGE_ACCEPT)
    start = time.perf_counter()
    articles = []
    seen = set()
    for f in range(feeds):
        spec = FeedSpec(url=f"{base}/outlet{f}/feed.xml")
        now = dt.datetime.now(dt.UTC)
        resp = get(spec.url, accept=FEED_ACCEPT)
        for entry in parse_feed(resp.body, resp.headers, spec, now).entries:
            if entry.url in seen:
                continue
            seen.add(entry.url)
            page = get(entry.url, accept=PAGE_ACCEPT, allowed_types=PAGE_TYPES)
            ex = extract_page(decode_html(page.body, page.headers), page.url)
            a = build_article(entry, ex, dt.datetime.now(dt.UTC))
            if a is None:
                continue
            lang, prob = detect_language(f"{a.title}\n{a.body}", entry.language_hint)
            a = assign_topic(a.__class__(**{**a.__dict__, "language": lang,
                                            "language_confidence": prob}), mapping, classifier)
            # The story stage's per-article work: one similarity sketch per article.
            sketches.append(similarity.sketch(a.title, a.body, a.language))
            articles.append(a)
    pq.write_table(to_rows(articles, ARTICLE_SCHEMA), os.path.join(out, "articles.parquet"))
    return len(articles), time.perf_counter() - start


def child(mode: str, base: str, feeds: int, similarity_name: str) -> None:
    """One measurement; prints a JSON line."""
    with tempfile.TemporaryDirectory(prefix="nb-bench-") as out:
        start = time.perf_counter()
        if mode in ("loop", "cpu"):
            n, seconds = plain_loop(base, feeds, out, similarity_name, prefetch=mode == "cpu")
        else:
            extra = [] if mode == "beam" else ["--direct_running_mode=multi_processing",
                                               "--direct_num_workers=2"]
            n = ingest_site(base, feeds, out, similarity_name, extra).articles
            seconds = time.perf_counter() - start
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"mode": mode, "articles": n, "seconds": seconds,
                      "peak_rss_mb": round(max(self_kb, kids_kb) / 1024, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    site_arguments(ap, rounds=2, modes="cpu,loop,beam,beam-2w")
    ap.add_argument("--similarity", default="multilingual", choices=["multilingual", "lexical"],
                    help="Story similarity for every mode (default: the pipeline's).")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.base, a.feeds, a.similarity)
        return
    results: dict[str, list[dict]] = {m: [] for m in a.modes.split(",")}
    with synthetic_site(a.feeds, a.per_feed) as base:
        for r in range(a.rounds):
            for mode in results:
                proc = subprocess.run(
                    child_command(__file__, mode, base, a.feeds, a.similarity),
                    capture_output=True, text=True, check=True, cwd=HERE.parent)
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                results[mode].append(res)
                print(f"round {r + 1} {mode:8} {res['articles']} articles in "
                      f"{res['seconds']:.1f} s = {res['articles'] / res['seconds']:.1f}/s, "
                      f"peak RSS {res['peak_rss_mb']} MB", flush=True)
    rate = {m: statistics.median(x["articles"] / x["seconds"] for x in v)
            for m, v in results.items()}
    print(f"\n{a.feeds * a.per_feed} articles, {os.cpu_count()} CPUs, median of {a.rounds} "
          f"rounds, story similarity {a.similarity}")
    for m, v in results.items():
        line = f"  {m:8} {rate[m]:7.1f} articles/s"
        for ref in ("cpu", "loop"):
            if ref in rate and m not in ("cpu", "loop"):
                line += f"   ratio to {ref} {rate[m] / rate[ref]:.2f}"
        line += f"   peak RSS {max(x['peak_rss_mb'] for x in v)} MB"
        print(line)


if __name__ == "__main__":
    main()
