"""The value types the settings are built from: strict models, redacted URLs, addresses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, ValidationError

from scanner.errors import ConfigError
from scanner.secrets import redact_url

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
CHAIN_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")


def address(value: str) -> str:
    if not ADDRESS.match(value):
        raise ValueError(f"not a 20-byte hex address: {value!r}")
    return value.lower()


Address = Annotated[str, AfterValidator(address)]
_WRITTEN = re.compile(r"^(0x[0-9a-fA-F]{40}|41[0-9a-fA-F]{40}|T[1-9A-HJ-NP-Za-km-z]{33})$")


def written_address(value: str) -> str:
    """An address in one of the spellings some chain kind takes: ``0x…`` hex (lower-cased, as
    before), or TRON's ``41…`` hex and base58 ``T…`` (kept as written; the chain's kind checks
    that it is its own)."""
    if not _WRITTEN.match(value):
        raise ValueError(f"not an address (0x…, 41… or T…): {value!r:.60}")
    return value.lower() if value.startswith("0x") else value


WrittenAddress = Annotated[str, AfterValidator(written_address)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RpcUrl(SecretStr):
    """An RPC URL: shown redacted (``https://host/***``), the real value by ``get_secret_value``."""

    def _display(self) -> str:
        return redact_url(self.get_secret_value())


def url_start(url: str) -> str:
    """What a URL begins with, up to its first ``:``, ``/``, ``?`` or ``@``: enough to recognise
    the mistake, never a key in its path, query or user part."""
    start = re.split(r"[:/?@#]", url.strip(), maxsplit=1)[0]
    return start[:40] or url.strip()[:1]


_SCHEMES = {"http(s)": ("http://", "https://"), "ws:// or wss://": ("ws://", "wss://")}


def check_url(url: RpcUrl, what: str, schemes: str = "http(s)") -> RpcUrl:
    """``url`` if its scheme is one of ``schemes``, it names a host, and any port is 0-65535."""
    value = url.get_secret_value()
    if not value.startswith(_SCHEMES[schemes]):
        wanted = " or ".join(_SCHEMES[schemes])
        raise ValueError(
            f"{what} must start with {wanted}; this one starts with {url_start(value)!r}"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError as exc:
        raise ValueError(f"{what} {url}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"{what} {url} names no host")
    return url


def check_ws_url(url: RpcUrl) -> RpcUrl:
    return check_url(url, "ws_url", "ws:// or wss://")


def _loc(error: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in error.get("loc", ()):
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def _message(error: Mapping[str, Any]) -> str:
    """Pydantic's message, without its ``Value error,`` prefix (our validators' own words)."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def config_error(exc: ValidationError, file: str | None) -> ConfigError:
    first = exc.errors()[0]
    key = _loc(first)
    where = f" in {file}" if file else ""
    problems = "; ".join(f"{_loc(e)}: {_message(e)}" for e in exc.errors())
    return ConfigError(f"invalid configuration{where}: {problems}", key=key, file=file)
