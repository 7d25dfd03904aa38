"""Feeds and other sources of entries: source lists (YAML, OPML, plain text), RSS/Atom/RDF and
JSON Feed parsing into :class:`~schemas.Entry` records, the batch feed read, polling state of
the continuous modes, and JSONL backfill.
"""
