"""Small Beam helpers every stage shares: the metrics namespace, error records, explicit
windowing of outputs, and the test for triggers that fire once."""

from __future__ import annotations

import datetime as dt
from typing import Any

from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas import SCHEMA_VERSION, ErrorRecord

NAMESPACE = "newsbeam"
"""The namespace of every Beam metric the pipeline reports."""


def error_record(url: str, feed_url: str, level: str, stage: str, reason: str, message: str,
                 http_status: int | None, attempts: int,
                 occurred_at: dt.datetime, source: str | None = None,
                 language: str | None = None) -> ErrorRecord:
    """Builds an :class:`ErrorRecord`; ``message`` is cut to 2,000 characters.

    Every expected failure becomes one of these instead of being dropped. ``source`` and
    ``language`` are the outlet and declared language where the failing stage knows them
    (empty strings are stored as null).
    """
    return ErrorRecord(
        url=url[:2000], feed_url=feed_url, level=level, stage=stage, reason=reason,
        message=message[:2000], http_status=http_status, attempts=attempts,
        occurred_at=occurred_at, date=occurred_at.strftime("%Y-%m-%d"),
        schema_version=SCHEMA_VERSION, source=source or None, language=language or None)


def windowed(value: Any, timestamp: Any, window: Any) -> WindowedValue:
    """``value`` in ``window`` at ``timestamp`` (seconds or a Beam Timestamp).

    Outputs of ``finish_bundle`` must carry their window explicitly; the fetch DoFns
    use the same form in ``process`` so both paths emit identical elements.
    """
    if isinstance(timestamp, (int, float)):
        timestamp = Timestamp.of(timestamp)
    return WindowedValue(value, timestamp, (window,))


def fires_once(windowing) -> bool:
    """Whether a GroupByKey under ``windowing`` emits each key and window exactly once.

    True for the default trigger without allowed lateness (batch, or fixed windows in
    the continuous pipeline): no later firing can need what an earlier one saw, so the
    stateful DoFns are replaced by plain ones. Keyed state costs a lot in the Python SDK
    harness: every state write re-measures the cached value with ``objsize``, which
    walks all loaded modules (about 4 ms per call here), several times per key.
    """
    from apache_beam.transforms.trigger import DefaultTrigger

    return isinstance(windowing.triggerfn, DefaultTrigger) and windowing.allowed_lateness == 0
