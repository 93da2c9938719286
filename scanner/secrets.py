"""Keeping secrets out of logs, errors, reprs and printed output: the one place that knows what
a secret looks like and hides it.

RPC URLs carry API keys (in the path, the query, the user part, or a host label such as
``https://<key>.eth.rpc.rivet.cloud``) and database URLs carry passwords. Everything that shows a
URL to a person shows :func:`redact_url` of it.

A :class:`Scrubber` is built from the secret strings the settings list
(:meth:`scanner.config.Settings.secrets`). Besides each whole secret it also hides the parts
of a secret URL that are secret on their own, because libraries often print them apart from
the URL: the password of a database URL, API-key-like path segments, host labels and
credential query values of an RPC URL. It is the structlog processor that scrubs every log
record, and what the CLI prints goes through it (:func:`printable` escapes what a terminal
would act on).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from structlog.typing import EventDict, WrappedLogger

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


DATABASE_SCHEMES = ("postgres", "sqlite", "mysql")


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
        if parts.scheme.startswith(DATABASE_SCHEMES):
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


_MIN_FRAGMENT = 4  # shorter fragments would blank out ordinary words
_MIN_KEY_LIKE = 16  # a path segment or query value this long is treated as an API key
_MAX_DEPTH = 12
# What a terminal acts on instead of showing: C0 and C1 controls (escape sequences, a carriage
# return or a newline that starts a fake line), bidi and zero-width marks, lone surrogates.
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)


def printable(text: str) -> str:
    """``text`` safe to print for a person: what a terminal would act on is shown escaped
    (``\\x1b``, ``\\n``, ``\\u202e``), so an answer cannot clear the screen or fake a line."""
    return _UNPRINTABLE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def secret_fragments(secret: str) -> list[str]:
    """The pieces of a secret URL that must not appear on their own either."""
    try:
        parts = urlsplit(secret)
        password = parts.password
    except ValueError:
        return []
    if not parts.scheme or not parts.netloc:
        return []
    found: list[str] = []
    if password:
        found += [password, unquote(password)]
    if not parts.scheme.startswith(DATABASE_SCHEMES):  # a database's path is its name, no key
        found += [seg for seg in parts.path.split("/") if len(seg) >= _MIN_KEY_LIKE]
    host = parts.netloc.rpartition("@")[2]  # as written: the scrubber matches case
    found += key_labels(host.rpartition(":")[0] if ":" in host else host)
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if len(value) >= _MIN_KEY_LIKE or CREDENTIAL_WORD.search(key):
            found.append(value)
    return [f for f in found if len(f) >= _MIN_FRAGMENT]


def url_secrets(url: str) -> list[str]:
    """What to scrub from a node's text for ``url`` (longest first): the URL and its parts that
    may be a key (path segments, query values, user, password, host labels that look like keys)."""
    parts = urlsplit(url)
    pieces = [url, *parts.path.split("/"), *(v for _, v in parse_qsl(parts.query))]
    pieces += [parts.username or "", parts.password or "", *key_labels(parts.hostname or "")]
    return sorted({p for p in pieces if len(p) >= 8}, key=len, reverse=True)


def _expand(secrets: Iterable[str]) -> tuple[str, ...]:
    expanded: set[str] = set()
    for secret in secrets:
        if secret:
            expanded.add(secret)
            expanded.update(secret_fragments(secret))
    # Longest first, so that a secret containing another one is replaced whole.
    return tuple(sorted(expanded, key=len, reverse=True))


def _redacted(secret: str) -> str:
    try:
        return redact_url(secret)
    except ValueError:
        return "***"


def _shown(value: object) -> str:
    """Exceptions read best as repr (class and message); Decimal, datetime, UUID as str."""
    try:
        return repr(value) if isinstance(value, BaseException) else str(value)
    except Exception:  # a broken __str__ must not lose the log line
        return f"<unprintable {type(value).__name__}>"


class Scrubber:
    """Removes secrets from strings and from any structure of values holding strings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = _expand(secrets)
        # A whole secret URL is shown as its redacted form, which still names the host.
        self._urls = tuple((s, _redacted(s)) for s in self._secrets if "://" in s)

    def text(self, text: str) -> str:
        """``text`` with known secrets replaced by ``***`` and every URL redacted."""
        for secret, shown in self._urls:
            text = text.replace(secret, shown)
        try:
            return scrub(text, self._secrets)
        except ValueError:  # a URL-looking fragment urllib cannot parse (e.g. a bad port)
            for secret in self._secrets:
                text = text.replace(secret, "***")
            return URL_IN_TEXT.sub("<redacted url>", text)

    def printable(self, text: str) -> str:
        """``text`` scrubbed and escaped: safe to print for a person (:func:`printable`)."""
        return printable(self.text(text))

    def value(self, value: object, depth: int = 0) -> object:
        """A copy of ``value`` safe to render: containers walked, other objects stringified."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= _MAX_DEPTH:
            return self.text(_shown(value))
        if isinstance(value, Mapping):
            return {self.text(_shown(k)): self.value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v, depth + 1) for v in value]
        return self.text(_shown(value))

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """structlog processor: scrub every value (run it after exceptions are rendered)."""
        return {key: self.value(val) for key, val in event_dict.items()}
