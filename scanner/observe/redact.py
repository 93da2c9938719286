"""The one place log output is scrubbed: known secrets become ``***`` and URLs are redacted.

A :class:`Scrubber` is built from the secret strings the settings list
(:meth:`scanner.config.Settings.secrets`). Besides each whole secret it also hides the parts
of a secret URL that are secret on their own, because libraries often print them apart from
the URL: the password of a database URL, API-key-like path segments, host labels and
credential query values of an RPC URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from structlog.typing import EventDict, WrappedLogger

from scanner.secrets import CREDENTIAL_WORD, URL_IN_TEXT, key_labels, redact_url, scrub

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
    found += [seg for seg in parts.path.split("/") if len(seg) >= _MIN_KEY_LIKE]
    host = parts.netloc.rpartition("@")[2]  # as written: the scrubber matches case
    found += key_labels(host.rpartition(":")[0] if ":" in host else host)
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if len(value) >= _MIN_KEY_LIKE or CREDENTIAL_WORD.search(key):
            found.append(value)
    return [f for f in found if len(f) >= _MIN_FRAGMENT]


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
