"""Fetching through an HTTP(S) proxy, with the private-network guard kept.

``--proxy URL`` (or, when it is not given, the ``HTTPS_PROXY`` / ``HTTP_PROXY``
environment variables, per scheme, with ``NO_PROXY``) sends every request through a
forwarding proxy: plain ``http://`` targets as absolute-URI requests, ``https://``
targets through a ``CONNECT`` tunnel, so TLS still runs end to end with the site and its
certificate is still checked. The proxy itself may sit on a private address (it usually
does); the guard applies to the *target*: before a request is handed to the proxy, the
target's name is resolved here and refused when any address is loopback, private,
link-local or reserved, unless ``--allow-private-network``. A name that does not resolve
here is refused (``dns_error``) rather than left to the proxy, so a name only the
proxy's network knows cannot reach an internal host. The proxy resolves the name again,
so a DNS answer could change between the check and the connection (a direct connection
pins the checked address; a proxy cannot be told to).

A proxy URL may carry ``user:password@``: it becomes a ``Proxy-Authorization`` header
and is kept out of messages (:func:`redact`).
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Mapping

import urllib3
from urllib3.util import make_headers, parse_url


class ProxyConfigError(ValueError):
    """A proxy URL that cannot be used."""


def redact(url: str) -> str:
    """``url`` without its user information: ``http://proxy:3128``."""
    try:
        parts = parse_url(url)
    except ValueError:
        return "<unparseable proxy URL>"
    return f"{parts.scheme}://{parts.host}" + (f":{parts.port}" if parts.port else "")


def check_proxy_url(url: str) -> str:
    """Returns ``url`` when it is an http(s) proxy URL with a host; raises
    :class:`ProxyConfigError` (naming the URL without credentials) otherwise."""
    try:
        parts = parse_url(url)
    except ValueError as e:
        raise ProxyConfigError("--proxy: not a URL") from e
    if parts.scheme not in ("http", "https") or not parts.host:
        raise ProxyConfigError(f"--proxy {redact(url)}: give http://HOST:PORT or "
                               "https://HOST:PORT")
    return url


def proxies_from(explicit: str | None, env: Mapping[str, str] | None = None
                 ) -> tuple[tuple[tuple[str, str], ...], str]:
    """((scheme, proxy URL) pairs, NO_PROXY list) from ``--proxy`` or the environment.

    ``--proxy`` applies to both schemes and ignores NO_PROXY; otherwise ``https_proxy`` /
    ``http_proxy`` (either case) apply to their scheme and ``no_proxy`` lists the hosts
    that are fetched directly. ``--proxy ''`` turns environment proxies off.
    """
    if explicit is not None:
        if not explicit.strip():
            return (), ""
        url = check_proxy_url(explicit.strip())
        return (("http", url), ("https", url)), ""
    found = urllib.request.getproxies_environment() if env is None else {
        k.lower().removesuffix("_proxy"): v for k, v in env.items()
        if k.lower().endswith("_proxy") and v}
    pairs = tuple((scheme, check_proxy_url(found[scheme])) for scheme in ("http", "https")
                  if found.get(scheme))
    return pairs, found.get("no", "")


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``host`` is listed in a NO_PROXY value (suffixes, ``*``, host:port)."""
    return bool(no_proxy) and bool(
        urllib.request.proxy_bypass_environment(host, {"no": no_proxy}))


class ProxyPools:
    """One ``urllib3.ProxyManager`` per proxy URL, made on first use; thread-safe."""

    def __init__(self, proxies: tuple[tuple[str, str], ...], no_proxy: str = ""):
        self._by_scheme = dict(proxies)
        self._no_proxy = no_proxy
        self._managers: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._by_scheme)

    def for_target(self, scheme: str, host: str) -> urllib3.ProxyManager | None:
        """The proxy to reach ``host`` over ``scheme`` with, or None to go direct."""
        url = self._by_scheme.get(scheme)
        if url is None or bypassed(host, self._no_proxy):
            return None
        with self._lock:
            manager = self._managers.get(url)
            if manager is None:
                parts = parse_url(url)
                headers = make_headers(proxy_basic_auth=parts.auth) if parts.auth else None
                manager = urllib3.ProxyManager(redact(url), num_pools=16, maxsize=8,
                                               block=False, proxy_headers=headers)
                self._managers[url] = manager
            return manager

    def close(self) -> None:
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()


def environment_has_proxy() -> bool:
    """Whether the process environment names an HTTP(S) proxy."""
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                           "http_proxy"))
