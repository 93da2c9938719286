"""The value types the settings are built from: strict models, redacted URLs, addresses."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr

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


def check_ws_url(url: RpcUrl) -> RpcUrl:
    if not url.get_secret_value().startswith(("ws://", "wss://")):
        raise ValueError(f"ws_url must be ws:// or wss://: {url}")
    return url
