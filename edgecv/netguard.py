"""Who may talk to a server edgecv starts (``run --serve``, ``serve``): loopback is open, anything else needs a token.

One rule for every listening endpoint (DESIGN rule 15's network side):

- binding a loopback address (127.0.0.0/8, ::1, ``localhost``) needs nothing;
- binding any other address needs a token, from ``--token`` or the ``EDGECV_TOKEN`` environment variable, and is
  refused in one line without one;
- a request then carries the token as ``Authorization: Bearer <token>`` (or ``?token=<token>`` for a browser or an
  ``<img>`` tag), compared in constant time;
- the number of simultaneous clients is bounded (:class:`ClientLimit`).

Runtime tier: standard library only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from edgecv.errors import ConfigError

TOKEN_ENV = "EDGECV_TOKEN"
DEFAULT_MAX_CLIENTS = 8
MIN_TOKEN_LEN = 16


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``; an empty host or ``0.0.0.0`` / ``::`` is every interface."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def resolve_token(flag: str | None) -> str | None:
    """The token from the flag, else from ``EDGECV_TOKEN``; None when neither is set."""
    token = flag if flag else os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_LEN:
        raise ConfigError(f"--token: expected at least {MIN_TOKEN_LEN} characters, found {len(token)}")
    return token


def check_bind(host: str, token: str | None, what: str = "--serve") -> None:
    """Refuse a non-loopback bind without a token (one line, naming both ways to give one)."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"{what}: binding {host or 'every interface'} exposes the server to the network; expected a token "
            f"(--token or the {TOKEN_ENV} environment variable), found none. Bind 127.0.0.1 to serve this machine only"
        )


def request_token(headers: Mapping[str, str] | Any, path: str) -> str | None:
    """The token a request carries: ``Authorization: Bearer …`` first, then the ``token`` query parameter."""
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    query = urllib.parse.urlsplit(path).query
    values = urllib.parse.parse_qs(query).get("token")
    return values[0] if values else None


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time check; with no expected token every request passes (loopback binds)."""
    if not expected:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


class ClientLimit:
    """A bounded count of simultaneous clients: :meth:`acquire` returns False when the server is full."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if max_clients < 1:
            raise ConfigError(f"--max-clients: expected at least 1, found {max_clients}")
        self.max_clients = int(max_clients)
        self._sem = threading.BoundedSemaphore(self.max_clients)
        self.refused = 0

    def acquire(self) -> bool:
        ok = self._sem.acquire(blocking=False)
        if not ok:
            self.refused += 1
        return ok

    def release(self) -> None:
        self._sem.release()
