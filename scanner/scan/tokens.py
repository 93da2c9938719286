"""The ``tokens`` table, live: read every tick, parsed row by row, decimals checked against the
contract.

The table is the gateway's and the source of truth. A row that cannot be used (an address that is
not 20 bytes of hex, decimals that are not a whole number from 0 to 77) is logged once
(``token_invalid``), counted, and skipped; two rows of one contract (addresses differing in
letter case: the chain's addresses are lower-case hex) are reported the same way, and both
rows' payments followed; a token whose row says other decimals than its
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
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scanner.chain.reader import ChainReader
from scanner.core.kinds import EVM, ChainKind
from scanner.db.payments import raw, stored_key
from scanner.db.sql import table
from scanner.errors import RpcError
from scanner.observe.metrics import Metrics, NullMetrics
from scanner.scan.context import TokenInfo, by_address
from scanner.scan.startup import duplicate

log = structlog.get_logger(__name__)
MAX_DECIMALS = 77  # 10**77 base units still fit a uint256


@dataclass(frozen=True, slots=True)
class TokenRow:
    key: Any
    enabled: bool
    info: TokenInfo


def parse_token(row: Any, kind: ChainKind = EVM) -> TokenRow:
    """A ``tokens`` row (key, address, symbol, decimals, enabled); ValueError with the reason
    (an address ``kind`` does not take: not 20 bytes of hex, a TRON address's bad checksum)."""
    key, address, symbol, decimals, enabled = row[:5]
    try:
        token_id = key if isinstance(key, UUID) else uuid.UUID(str(key).strip())
    except ValueError:
        raise ValueError(f"id {str(key)!r:.60} is not a uuid") from None
    if not isinstance(address, str):
        raise ValueError(f"address {str(address)!r:.60} is not 20 bytes of hex")
    normalized = kind.parse_address(address)
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise ValueError(f"decimals {decimals!r:.20} is not a whole number")
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals {decimals} is not between 0 and {MAX_DECIMALS}")
    info = TokenInfo(token_id, normalized, str(symbol), decimals, stored_key(key))
    return TokenRow(key, enabled in (True, 1, "1", "true", "t"), info)


async def read_tokens(session: AsyncSession, chain: str) -> list[Any]:
    """Raw rows: id, address, symbol, decimals, enabled, scanner_enabled."""
    t = table("tokens")
    columns = (t.c.id, t.c.address, t.c.symbol, t.c.decimals, t.c.enabled, t.c.scanner_enabled)
    stmt = select(*(raw(c) for c in columns)).where(t.c.chain == chain)
    return list(await session.execute(stmt))


async def _remember(session: AsyncSession, used: list[tuple[Any, bool]]) -> None:
    """Record whether each token's logs are read now (``tokens.scanner_enabled``)."""
    t = table("tokens")
    for key, value in used:
        await session.execute(update(t).where(raw(t.c.id) == key).values(scanner_enabled=value))


@dataclass
class TokenWatch:
    """What a chain knows of its tokens between ticks."""

    chain: str
    reader: ChainReader
    metrics: Metrics = field(default_factory=NullMetrics)
    kind: ChainKind = EVM
    checked: dict[UUID, int] = field(default_factory=dict)  # decimals the contract confirmed
    halted: dict[UUID, tuple[int, str]] = field(default_factory=dict)  # decimals → reason
    reported: set[str] = field(default_factory=set)  # invalid rows already logged
    enabled: set[UUID] | None = None  # in use at the last refresh; None before the first

    async def refresh(self, session: AsyncSession) -> tuple[dict[str, TokenInfo], list[TokenInfo]]:
        """The tokens to scan now (by address), and those enabled since the last refresh."""
        used_rows: list[TokenInfo] = []
        fresh: list[TokenInfo] = []
        changed: list[tuple[Any, bool]] = []
        for row in await read_tokens(session, self.chain):
            token = self._parse(row)
            if token is None:
                continue
            used = token.enabled and await self._agrees(token.info)
            if used:
                used_rows.append(token.info)
            if used and self._was_off(row[5]):
                fresh.append(token.info)
            if row[5] is None or bool(row[5]) != used:
                changed.append((stored_key(token.key), used))
        await _remember(session, changed)
        usable, duplicates = by_address(used_rows)
        for info in duplicates:
            self._report(info.key if info.key is not None else info.id, duplicate(info))
        self.enabled = {info.id for info in used_rows}
        return usable, fresh

    def _was_off(self, scanner_enabled: Any) -> bool:
        """Whether the token's logs were not read before (a row never looked at counts as off
        only once this process has looked at the table: a database from before the column)."""
        if scanner_enabled is None:
            return self.enabled is not None
        return not bool(scanner_enabled)

    def _parse(self, row: Any) -> TokenRow | None:
        try:
            return parse_token(tuple(row[:5]), self.kind)
        except ValueError as exc:
            self._report(row[0], str(exc))
            return None

    def _report(self, key: Any, reason: str) -> None:
        """``token_invalid`` for a row, once per reason."""
        if f"{key}:{reason}" in self.reported:
            return
        self.reported.add(f"{key}:{reason}")
        log.warning("token_invalid", chain=self.chain, token_id=str(key), reason=reason)
        self.metrics.invalid_rows.labels(self.chain, "tokens").inc()

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
        shown = self.kind.show(info.address)
        log.error("token_halted", chain=self.chain, token=shown, reason=reason)
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
        self.metrics.token_halted.labels(self.chain, info.address).set(1 if halted else 0)
