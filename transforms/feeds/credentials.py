"""Per-feed request headers, cookies and basic auth from the YAML feed config.

A feed entry of a YAML ``--feeds`` file may carry::

    feeds:
      - url: https://members.example.org/feed.xml
        headers: {Accept-Language: en}              # plain values: not secret
        headers_env: {X-Api-Key: EXAMPLE_API_KEY}   # header ← environment variable
        cookies_env: {session: EXAMPLE_SESSION}     # cookie ← environment variable
        auth: {username: reader, password_env: EXAMPLE_PASSWORD}  # HTTP basic auth

Secrets are never written in the file: a password can only come from an environment
variable (``password_env``), and so can any header or cookie value named under
``headers_env`` / ``cookies_env``. The variables are read when the feed list is read
(``newsbeam ingest`` and ``watch`` start), so a missing one is reported at once, naming
the variable, never its value.

Where the values go: the feed's own requests, and the requests for its article pages
whose origin (scheme, host and port) is the feed's. They are not sent to robots.txt, to
pages on other hosts, nor on a redirect that leaves the origin. The resolved values ride
inside the pipeline definition to the workers, as every option does; they are kept out
of ``repr``, error messages, logs and every table and state file.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from typing import Any

from transforms.fetching.http import url_origin

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header or cookie name (RFC 9110 token)."""
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEYS = frozenset({"headers", "headers_env", "cookies", "cookies_env", "auth"})
"""The feed keys this module reads."""
_REFUSED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                              "accept-encoding", "if-none-match", "if-modified-since"})
"""Headers the client sets itself: framing, validators, decoding."""


class CredentialError(ValueError):
    """A header, cookie or auth setting that cannot be used; the message names no secret."""


def _mapping(item: Mapping[str, Any], key: str) -> dict[str, str]:
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
            for k, v in value.items()):
        raise CredentialError(f"'{key}' must map names to text")
    return {k.strip(): str(v) for k, v in value.items()}


def _from_env(name: str, what: str, env: Mapping[str, str]) -> str:
    if not _ENV.match(name):
        raise CredentialError(f"{what}: {name[:80]!r} is not an environment variable name")
    value = env.get(name)
    if value is None or value == "":
        raise CredentialError(f"{what}: environment variable {name} is not set")
    return value


def _safe_value(value: str, what: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise CredentialError(f"{what}: the value holds a line break or NUL")
    return value.strip()


def request_credentials(item: Mapping[str, Any],
                        env: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The extra request headers of one YAML feed entry, secrets read from ``env``
    (default: the process environment); raises :class:`CredentialError`."""
    env = os.environ if env is None else env
    headers: dict[str, str] = {}
    plain, secret = _mapping(item, "headers"), _mapping(item, "headers_env")
    for name, value in [*plain.items(), *((n, _from_env(v, f"header {n}", env))
                                          for n, v in secret.items())]:
        if not _TOKEN.match(name) or name.lower() in _REFUSED_HEADERS:
            raise CredentialError(f"header name {name[:80]!r} cannot be set per feed")
        if name.lower() == "cookie":
            raise CredentialError("set cookies with 'cookies' or 'cookies_env'")
        headers[name] = _safe_value(value, f"header {name}")
    cookies = {n: _safe_value(v, f"cookie {n}") for n, v in _mapping(item, "cookies").items()}
    for name, var in _mapping(item, "cookies_env").items():
        cookies[name] = _safe_value(_from_env(var, f"cookie {name}", env), f"cookie {name}")
    for name, value in cookies.items():
        if not _TOKEN.match(name) or ";" in value:
            raise CredentialError(f"cookie {name[:80]!r}: bad name or a ';' in its value")
    if cookies:
        headers["Cookie"] = "; ".join(f"{n}={v}" for n, v in cookies.items())
    auth = item.get("auth")
    if auth is not None:
        if not isinstance(auth, dict) or set(auth) - {"username", "username_env",
                                                      "password_env"}:
            raise CredentialError("'auth' takes username (or username_env) and password_env; "
                                  "a password is only read from an environment variable")
        if "password_env" not in auth or not isinstance(auth["password_env"], str):
            raise CredentialError("'auth' needs password_env: the name of an environment "
                                  "variable holding the password")
        if isinstance(auth.get("username_env"), str):
            user = _from_env(auth["username_env"], "auth username", env)
        elif isinstance(auth.get("username"), str):
            user = auth["username"]
        else:
            raise CredentialError("'auth' needs username or username_env")
        if ":" in user:
            raise CredentialError("auth username must not contain ':'")
        password = _from_env(auth["password_env"], "auth password", env)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        if any(k.lower() == "authorization" for k in headers):
            raise CredentialError("give either 'auth' or an Authorization header, not both")
        headers["Authorization"] = f"Basic {token}"
    return tuple(headers.items())


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port."""
    return url_origin(a) == url_origin(b)
