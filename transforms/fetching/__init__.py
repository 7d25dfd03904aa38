"""Fetching: the HTTP client (limits, charsets, the address guard), politeness (robots.txt,
per-host limits and circuit breakers, Retry-After) and URL normalisation. Every page and feed
request of every mode goes through :class:`~transforms.fetching.politeness.PoliteFetchFn` or
:class:`~transforms.fetching.politeness.PoliteFetcher`.
"""
