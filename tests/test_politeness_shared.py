"""The per-host limit holds across the feed and page stages of one worker process."""

from transforms.fetching.http import FetchPolicy
from transforms.fetching.politeness import PoliteFetcher


def test_fetchers_of_one_process_share_their_host_limits():
    policy = FetchPolicy(per_host_concurrency=2, per_host_delay=0.0)
    feeds, pages = PoliteFetcher(policy, threads=2), PoliteFetcher(policy, threads=2)
    try:
        assert feeds.limiter is pages.limiter
        assert feeds.limiter.try_acquire("a.example") == 0.0
        assert pages.limiter.try_acquire("a.example") == 0.0
        assert feeds.limiter.try_acquire("a.example") == float("inf")  # 2 in flight: full
        pages.limiter.release("a.example")
        assert feeds.limiter.try_acquire("a.example") == 0.0
    finally:
        for f in (feeds, pages):
            f.limiter.release("a.example")
        feeds.close()
        pages.close()
