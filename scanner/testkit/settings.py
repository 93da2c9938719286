"""Settings as the scanner would build them, for tests and benchmarks: one place for both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scanner.config import ChainSettings, Settings, load_settings

CHAIN = "anvil"
CHAIN_ID = 31337  # anvil's default

# A scenario's chain: few confirmations, quick polls, small batches, few retries.
SCENARIO: dict[str, Any] = {
    "confirmations": 3,
    "poll_interval": 0.2,
    "batch_size": 50,
    "start_block": 0,
    "rpc_max_attempts": 3,
}


def settings_from(url: str, **environ: str) -> Settings:
    """Settings as the CLI would build them with ``DATABASE_URL_DEV=url`` (``ENV=testing``)."""
    return load_settings(environ={"ENV": "testing", "DATABASE_URL_DEV": url, **environ})


def chain_settings(
    url: str, tokens: Sequence[tuple[str, str, int]], **overrides: Any
) -> ChainSettings:
    """The chain ``anvil`` (id 31337) at ``url`` with ``tokens`` (symbol, address, decimals).

    :data:`SCENARIO` values unless overridden; an override of ``None`` takes the product's
    default instead (the benchmarks measure those).
    """
    data: dict[str, Any] = {
        "name": CHAIN,
        "chain_id": CHAIN_ID,
        "rpc_urls": [url],
        **SCENARIO,
        "tokens": [{"symbol": s, "address": a, "decimals": d} for s, a, d in tokens],
    }
    data.update(overrides)
    return ChainSettings.model_validate({k: v for k, v in data.items() if v is not None})
