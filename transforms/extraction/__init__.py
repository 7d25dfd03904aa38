"""From a fetched page to an :class:`~schemas.Article`: body extraction with trafilatura,
language detection, and the text helpers (cleaning, hashing) the other stages share.
"""
