"""Keeping secrets out of logs, errors and reprs.

RPC URLs carry API keys (in the path, the query or the user part) and database URLs carry
passwords. Everything that shows a URL to a person shows :func:`redact_url` of it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` plus a marker where a path, query or credentials were.

    >>> redact_url("https://eth-mainnet.g.alchemy.com/v2/abc123")
    'https://eth-mainnet.g.alchemy.com/***'
    >>> redact_url("postgresql://app:hunter2@db:5432/pay")
    'postgresql://app:***@db:5432/pay'
    """
    try:
        parts = urlsplit(url)
        if parts.scheme.startswith(("postgres", "sqlite", "mysql")):
            return _redact_database_url(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<redacted url>"
    hidden = bool(parts.path.strip("/") or parts.query or parts.username or parts.password)
    return f"{parts.scheme}://{host}{'/***' if hidden else ''}"


def _redact_database_url(url: str) -> str:
    parts = urlsplit(url)
    query = f"?{_redact_query(parts.query)}" if parts.query else ""
    if parts.password is None:
        return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{parts.scheme}://{user}:***@{hostinfo}{parts.path}{query}"


def _redact_query(query: str) -> str:
    """Hide values of query parameters that may carry credentials (password=, sslkey=, …)."""
    out = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        secret = any(w in name.lower() for w in ("pass", "key", "secret", "token"))
        out.append(f"{name}{sep}***" if sep and secret and value else pair)
    return "&".join(out)


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Redact every URL found in free text, and any known secret string."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
