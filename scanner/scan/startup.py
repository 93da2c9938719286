"""Before a chain scans: the node is the right chain, the tokens agree, the cursor exists, and
no credit below the blocks it stored sits in a block the node replaced."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings
from scanner.core.reorg import not_shown
from scanner.db import cursor as stored
from scanner.db import transactions
from scanner.db.models import Token
from scanner.errors import ChainIdMismatch, TokenConfigConflict, UnlinkedCredit
from scanner.scan.context import ChainContext, TokenInfo, by_address

log = structlog.get_logger(__name__)


async def check_chain_id(reader: ChainReader, chain: ChainSettings) -> None:
    actual = await reader.chain_id()
    if actual != chain.chain_id:
        raise ChainIdMismatch(chain=chain.name, expected=chain.chain_id, actual=actual)


async def sync_tokens(session: AsyncSession, chain: ChainSettings) -> dict[str, TokenInfo]:
    """Insert configured tokens the table lacks; never overwrite a row; return the enabled ones.

    The table is the source of truth: a row with ``enabled = false`` stops that token, and an
    enabled row the configuration does not list is scanned too.
    """
    kind = chain.kind_rules
    await _add_configured(session, chain)
    rows = (await session.execute(select(Token).where(Token.chain == chain.name))).scalars().all()
    tokens, duplicates = by_address(
        TokenInfo(row.id, key, row.symbol, row.decimals)
        for row in rows
        if row.enabled and (key := kind.match_key(row.address)) is not None
    )
    for same in duplicates:
        log.warning(
            "token_invalid", chain=chain.name, token_id=str(same.id), reason=duplicate(same)
        )
    return tokens


async def _add_configured(session: AsyncSession, chain: ChainSettings) -> None:
    """The configured tokens the table lacks, inserted; a configured one whose row says other
    decimals raises :class:`TokenConfigConflict`."""
    kind = chain.kind_rules
    rows = (await session.execute(select(Token).where(Token.chain == chain.name))).scalars().all()
    stored = {kind.match_key(row.address): row for row in rows}
    for token in chain.tokens:
        row = stored.get(kind.parse_address(token.address))
        if row is None:
            await session.execute(
                insert(Token).values(
                    id=uuid.uuid4(),
                    chain=chain.name,
                    address=token.address,
                    symbol=token.symbol,
                    decimals=token.decimals,
                    enabled=True,
                )
            )
            log.info("token_added", chain=chain.name, symbol=token.symbol, address=token.address)
        elif row.decimals != token.decimals:
            raise TokenConfigConflict(
                chain=chain.name,
                address=token.address,
                configured=token.decimals,
                stored=row.decimals,
            )


def duplicate(token: TokenInfo) -> str:
    """Why a row is reported that names a contract another row names."""
    return (
        f"address {token.address} is another row's contract (addresses compare in lower case):"
        " its payments are followed as that contract's"
    )


async def init_cursor(
    session: AsyncSession, reader: ChainReader, chain: ChainSettings
) -> stored.Cursor:
    """The stored cursor, or a fresh one at ``start_block - 1`` (default: the current head)."""
    cursor = await stored.get_cursor(session, chain.name)
    if cursor is not None:
        return cursor
    start = chain.start_block if chain.start_block is not None else await reader.head() + 1
    block = start - 1
    block_hash: str | None = None
    if block >= 0:
        header = (await reader.headers(block, block))[0]
        block_hash = header.hash
        await stored.store_blocks(session, chain.name, [header])
    await stored.init_cursor(session, chain.name, block, block_hash)
    log.info("cursor_initialized", chain=chain.name, block=block)
    return stored.Cursor(block, block_hash)


async def prepare_chain(
    sessions: async_sessionmaker[AsyncSession], reader: ChainReader, chain: ChainSettings
) -> tuple[ChainContext, int]:
    """Chain id, tokens and cursor, in that order; raises ChainHalted subclasses on conflict."""
    await check_chain_id(reader, chain)
    async with sessions() as session, session.begin():
        tokens = await sync_tokens(session, chain)
        cursor = await init_cursor(session, reader, chain)
        lowest = await stored.lowest_stored(session, chain.name)
        below = cursor.block + 1 if lowest is None else lowest
        unlinked = await transactions.unfinal_below(session, chain.name, below)
    gone = not_shown(unlinked, await reader.hashes_at({n for n, _ in unlinked}))
    if gone:
        raise UnlinkedCredit(chain=chain.name, block=gone[0])
    return ChainContext.from_settings(chain, tokens), cursor.block
