"""Error records: how every expected failure is kept instead of dropped."""

from __future__ import annotations

import datetime as dt

from schemas import SCHEMA_VERSION, ErrorRecord


def error_record(url: str, feed_url: str, level: str, stage: str, reason: str, message: str,
                 http_status: int | None, attempts: int,
                 occurred_at: dt.datetime) -> ErrorRecord:
    """Builds an :class:`ErrorRecord`; ``message`` is cut to 2,000 characters."""
    return ErrorRecord(
        url=url[:2000], feed_url=feed_url, level=level, stage=stage, reason=reason,
        message=message[:2000], http_status=http_status, attempts=attempts,
        occurred_at=occurred_at, date=occurred_at.strftime("%Y-%m-%d"),
        schema_version=SCHEMA_VERSION)
