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
