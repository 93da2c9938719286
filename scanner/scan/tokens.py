"""The ``tokens`` table, live: read every tick, parsed row by row, decimals checked against the
contract.

The table is the gateway's and the source of truth. A row that cannot be used (an address that is
not 20 bytes of hex, decimals that are not a whole number from 0 to 77) is logged once
(``token_invalid``), counted, and skipped; a token whose row says other decimals than its
contract's ``decimals()`` is halted (``token_halted``, naming both numbers): its logs are not
read and its payments wait, while the chain and its other tokens go on (a contract without
``decimals()``, which ERC-20 makes optional, is taken at the row's word, with a warning).
Enabling a token (a new row, or ``enabled`` set again) takes effect at the next tick, and its
open payments are looked back for (as the catch-up does) over the blocks it was off.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.chain.reader import ChainReader
from scanner.core.amounts import normalize_address
from scanner.db.payments import raw, stored_key
from scanner.db.sql import table
from scanner.errors import RpcError
from scanner.observe.metrics import Metrics
from scanner.scan.context import TokenInfo

log = structlog.get_logger(__name__)
MAX_DECIMALS = 77  # 10**77 base units still fit a uint256


@dataclass(frozen=True, slots=True)
class TokenRow:
    key: Any
    enabled: bool
    info: TokenInfo


def parse_token(row: Any) -> TokenRow:
    """A ``tokens`` row (key, address, symbol, decimals, enabled); ValueError with the reason."""
    key, address, symbol, decimals, enabled = row
    try:
        token_id = key if isinstance(key, UUID) else uuid.UUID(str(key).strip())
    except ValueError:
        raise ValueError(f"id {str(key)!r:.60} is not a uuid") from None
    normalized = normalize_address(address) if isinstance(address, str) else None
    if normalized is None:
        raise ValueError(f"address {str(address)!r:.60} is not 20 bytes of hex")
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise ValueError(f"decimals {decimals!r:.20} is not a whole number")
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals {decimals} is not between 0 and {MAX_DECIMALS}")
    info = TokenInfo(token_id, normalized, str(symbol), decimals, stored_key(key))
    return TokenRow(key, enabled in (True, 1, "1", "true", "t"), info)


async def read_tokens(session: AsyncSession, chain: str) -> list[Any]:
    t = table("tokens")
    columns = (t.c.id, t.c.address, t.c.symbol, t.c.decimals, t.c.enabled)
    stmt = select(*(raw(c) for c in columns)).where(t.c.chain == chain)
    return list(await session.execute(stmt))


@dataclass
class TokenWatch:
    """What a chain knows of its tokens between ticks."""

    chain: str
    reader: ChainReader
    metrics: Metrics | None = None
    checked: dict[UUID, int] = field(default_factory=dict)  # decimals the contract confirmed
    halted: dict[UUID, tuple[int, str]] = field(default_factory=dict)  # decimals → reason
    reported: set[str] = field(default_factory=set)  # invalid rows already logged
    enabled: set[UUID] | None = None  # at the last refresh; None before the first

    async def refresh(self, session: AsyncSession) -> tuple[dict[str, TokenInfo], list[TokenInfo]]:
        """The tokens to scan now (by address), and those enabled since the last refresh."""
        usable: dict[str, TokenInfo] = {}
        for row in await read_tokens(session, self.chain):
            token = self._parse(row)
            if token is not None and token.enabled and await self._agrees(token.info):
                usable[token.info.address] = token.info
        before = self.enabled
        self.enabled = {info.id for info in usable.values()}
        if before is None:
            return usable, []
        return usable, [info for info in usable.values() if info.id not in before]

    def _parse(self, row: Any) -> TokenRow | None:
        try:
            return parse_token(tuple(row))
        except ValueError as exc:
            reason = str(exc)
            if f"{row[0]}:{reason}" not in self.reported:
                self.reported.add(f"{row[0]}:{reason}")
                log.warning("token_invalid", chain=self.chain, token_id=str(row[0]), reason=reason)
                if self.metrics is not None:
                    self.metrics.invalid_rows.labels(self.chain, "tokens").inc()
            return None

    async def _agrees(self, info: TokenInfo) -> bool:
        """Whether the row's decimals are the contract's (asked once per row value)."""
        if self.checked.get(info.id) == info.decimals:
            return True
        halted = self.halted.get(info.id)
        if halted is not None and halted[0] == info.decimals:
            return False
        reason = await self._decimals_problem(info)
        if reason is None:
            self.checked[info.id] = info.decimals
            self.halted.pop(info.id, None)
            self._halted_metric(info, False)
            return True
        self.halted[info.id] = (info.decimals, reason)
        log.error("token_halted", chain=self.chain, token=info.address, reason=reason)
        self._halted_metric(info, True)
        return False

    async def _decimals_problem(self, info: TokenInfo) -> str | None:
        """Why the row's decimals cannot be trusted, or None. ``decimals()`` is optional in
        ERC-20: a contract without it (a revert, no answer) is trusted on the row's word."""
        try:
            actual = await self.reader.token_decimals(info.address)
        except RpcError as exc:
            if exc.transient:
                raise
            log.warning(
                "token_decimals_unknown", chain=self.chain, token=info.address, reason=str(exc)
            )
            return None
        if actual != info.decimals:
            return (
                f"token {info.address} ({info.symbol}): the tokens table says {info.decimals}"
                f" decimals, the contract's decimals() says {actual}"
            )
        return None

    def _halted_metric(self, info: TokenInfo, halted: bool) -> None:
        if self.metrics is not None:
            self.metrics.token_halted.labels(self.chain, info.address).set(1 if halted else 0)
