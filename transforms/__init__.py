"""The pipeline's Beam transforms and the pure functions behind them, one subpackage per stage.

Stages, in the order an entry meets them: :mod:`transforms.feeds` (sources, feed parsing,
polling, backfill) → :mod:`transforms.fetching` (polite HTTP) → :mod:`transforms.extraction`
(body, language) → :mod:`transforms.topics` → :mod:`transforms.stories` (exact duplicates,
story links) → :mod:`transforms.sinks` (Parquet, publishing). :mod:`transforms.util` holds the
few Beam helpers they all share; ``transforms/data/`` the packaged data files.
"""
