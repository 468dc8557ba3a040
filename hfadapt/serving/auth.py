"""The API key: `Authorization: Bearer KEY`, compared in constant time; the key is never echoed."""

from __future__ import annotations

import hmac
import os

API_KEY_ENV = "HFADAPT_API_KEY"
OPEN_PATHS = ("/health",)  # load balancers probe it without credentials


def resolve_key(given: str | None) -> str | None:
    """--api-key, else HFADAPT_API_KEY, else None (no authentication)."""
    key = given if given is not None else os.environ.get(API_KEY_ENV)
    return key or None


def authorized(header: str | None, key: str) -> bool:
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest on bytes: str arguments must be ASCII, and a non-ASCII header would raise
    return hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), key.encode("utf-8"))
