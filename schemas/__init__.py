"""Record types shared by every stage; the single source of truth for the output schemas."""

from schemas.records import (
    ARTICLE_SCHEMA,
    DUPLICATE_SCHEMA,
    ERROR_SCHEMA,
    SCHEMA_VERSION,
    Article,
    DuplicateRecord,
    Entry,
    ErrorRecord,
    FeedSpec,
    SitemapLimits,
)

__all__ = [
    "ARTICLE_SCHEMA",
    "DUPLICATE_SCHEMA",
    "ERROR_SCHEMA",
    "SCHEMA_VERSION",
    "Article",
    "DuplicateRecord",
    "Entry",
    "ErrorRecord",
    "FeedSpec",
    "SitemapLimits",
]
