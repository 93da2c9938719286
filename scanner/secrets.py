"""Keeping secrets out of logs, errors and reprs: the one place that knows what a secret
looks like (:mod:`scanner.observe.redact` applies these rules to log records and output).

RPC URLs carry API keys (in the path, the query, the user part, or a host label such as
``https://<key>.eth.rpc.rivet.cloud``) and database URLs carry passwords. Everything that shows a
URL to a person shows :func:`redact_url` of it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from urllib.parse import urlsplit

URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+")
# A query parameter or field with one of these words in its name holds a credential.
CREDENTIAL_WORD = re.compile(r"pass|secret|token|key|auth|sig", re.IGNORECASE)
_HEX_ID = re.compile(r"[0-9a-f]{16,}")
_MIN_KEY_LABEL = 16  # a host label's part this long may be a key
_MIN_KEY_ENTROPY = 3.0  # bits per character: words and counters stay below, keys above


def key_like_label(label: str) -> bool:
    """Whether a host label looks like an API key: a part (between ``-`` and ``_``) of 16 or
    more characters mixing letters and digits with high entropy, or a long hex id (a uuid).
    ``eth-mainnet``, ``polygon-mainnet-archive`` and ``nd-123-456-789`` do not."""
    label = label.lower()
    if _HEX_ID.fullmatch(label.replace("-", "")) and any(c.isdigit() for c in label):
        return True
    return any(_key_like_part(part) for part in re.split(r"[-_]", label))


def _key_like_part(part: str) -> bool:
    if len(part) < _MIN_KEY_LABEL or part.isdigit() or part.isalpha():
        return False
    counts = Counter(part)
    entropy = -sum(n / len(part) * math.log2(n / len(part)) for n in counts.values())
    return entropy >= _MIN_KEY_ENTROPY


def key_labels(host: str) -> list[str]:
    """The labels of ``host`` that look like keys (see :func:`key_like_label`)."""
    return [label for label in host.split(".") if key_like_label(label)]


def _shown_host(host: str) -> str:
    return ".".join("***" if key_like_label(label) else label for label in host.split("."))


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` plus a marker where a path, query or credentials were; a host
    label that looks like a key is ``***`` too.

    >>> redact_url("https://eth-mainnet.g.alchemy.com/v2/abc123")
    'https://eth-mainnet.g.alchemy.com/***'
    >>> redact_url("https://0123456789abcdef0123456789abcdef.eth.rpc.rivet.cloud/")
    'https://***.eth.rpc.rivet.cloud'
    >>> redact_url("postgresql://app:hunter2@db:5432/pay")
    'postgresql://app:***@db:5432/pay'
    """
    try:
        parts = urlsplit(url)
        if parts.scheme.startswith(("postgres", "sqlite", "mysql")):
            return _redact_database_url(url)
        host = _shown_host(parts.hostname or "")
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
        secret = CREDENTIAL_WORD.search(name) is not None
        out.append(f"{name}{sep}***" if sep and secret and value else pair)
    return "&".join(out)


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Redact every URL found in free text, and any known secret string."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    """A URL found in text, redacted; punctuation after it (``http://host:8545: refused``, a
    full stop) is the sentence's, not the URL's."""
    url = match.group(0)
    bare = url.rstrip(".,:;!?)]}")
    return redact_url(bare) + url[len(bare) :]
