"""URL canonicalisation and stable identifiers.

Two links to the same article should produce the same ``article_id``. The canonical form
(built on ``courlan``'s normaliser) lowercases scheme and host, drops default ports,
removes tracking parameters (``utm_*``, ``fbclid``, ``gclid`` and similar), sorts the
remaining query parameters and drops the fragment.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

from courlan import normalize_url

_TRACKING = re.compile(r"^(utm_[a-z_]+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|yclid|_ga|igshid)$",
                       re.IGNORECASE)
ALLOWED_SCHEMES = ("http", "https")


def is_http_url(url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL with a host (and a valid port)."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for ports out of range or not numeric
    except ValueError:
        return False
    return parts.scheme.lower() in ALLOWED_SCHEMES and bool(parts.hostname)


def canonical_url(url: str) -> str:
    """Returns the canonical form of an http(s) URL.

    Raises:
      ValueError: if the URL is not an absolute http(s) URL.
    """
    url = url.strip()
    if not is_http_url(url):
        raise ValueError(f"not an absolute http(s) URL: {url[:200]!r}")
    try:
        normalized = normalize_url(url)
    except Exception:  # courlan raises assorted errors on odd input
        normalized = url
    parts = urlsplit(normalized)
    query = "&".join(
        kv for kv in parts.query.split("&") if kv and not _TRACKING.match(kv.split("=", 1)[0])
    )
    host = (parts.hostname or "").lower()
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", query, ""))


def stable_id(*parts: str) -> str:
    """16 hex characters of BLAKE2b over the parts; stable across runs and machines."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def host_of(url: str) -> str:
    """Lowercase host[:port] of a URL, '' if it has none."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        return host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return ""
