"""Which native-coin recipients a scan reads full blocks for: the database's answer, asked in
short reads of its own before a range's transaction (:mod:`scanner.scan.fetch` only reads the
node)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.core.kinds import EVM, ChainKind
from scanner.db import payments
from scanner.scan.fetch import NativeWatch


async def native_watch(
    sessions: async_sessionmaker[AsyncSession], chain: str, kind: ChainKind = EVM
) -> NativeWatch:
    """What a scan reads native transfers for: nothing while the chain has no open native-coin
    payment (or its kind follows none), else a lookup of each range's recipients (a short read,
    before the range's transaction), so that no set of the native book is held in memory."""
    if not kind.native:
        return ()
    async with sessions() as session:
        if not await payments.any_native_open(session, chain):
            return ()

    async def lookup(addresses: set[str]) -> set[str]:
        async with sessions() as session:
            return await payments.native_among(session, chain, addresses)

    return lookup
