"""What an operator does to resume a halted chain after a reorg deeper than max_reorg_depth.

``scanner rewind --chain NAME --to-block N`` undoes every block above N as a reorg walk-back
would (transactions orphaned with their events, payments recomputed, block hashes above N
deleted) and sets the cursor to N with N's hash as the node now has it. The next ``scanner run``
rescans from N + 1. It takes the chain's transaction lock, so it is safe beside a running
scanner, but the usual order is: stop the service, rewind, start it.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings
from scanner.db import cursor as stored
from scanner.db.locks import COMMAND_IDLE_SECONDS, chain_xact_lock
from scanner.errors import ConfigError
from scanner.scan.context import ChainContext
from scanner.scan.reorg import ReorgOutcome, rewind
from scanner.scan.startup import check_chain_id, sync_tokens

log = structlog.get_logger(__name__)


async def rewind_chain(
    chain: ChainSettings,
    reader: ChainReader,
    sessions: async_sessionmaker[AsyncSession],
    to_block: int,
) -> ReorgOutcome:
    if to_block < 0:
        raise ConfigError(f"--to-block {to_block} must not be negative", key="--to-block")
    await check_chain_id(reader, chain)
    head = await reader.head()
    if to_block > head:
        raise ConfigError(
            f"--to-block {to_block} is past the node's head {head}: the node has no such block",
            key="--to-block",
        )
    header = (await reader.headers(to_block, to_block))[0]
    async with sessions() as session, session.begin():
        await chain_xact_lock(session, chain.name, idle_seconds=COMMAND_IDLE_SECONDS)
        cursor = await stored.get_cursor(session, chain.name)
        if cursor is None:
            raise ConfigError(f"chain {chain.name!r} has no cursor yet", key="--chain")
        if to_block > cursor.block:
            raise ConfigError(
                f"--to-block {to_block} is above the cursor {cursor.block}", key="--to-block"
            )
        ctx = ChainContext.from_settings(chain, await sync_tokens(session, chain))
        await stored.delete_blocks_above(session, chain.name, to_block - 1)
        await stored.store_blocks(session, chain.name, [header])
        outcome = await rewind(
            session, ctx, cursor=cursor.block, ancestor=to_block, tag_block=None, whole=True
        )
    log.warning(
        "chain_rewound",
        chain=chain.name,
        old_cursor=outcome.old_cursor,
        to_block=to_block,
        orphaned=outcome.orphaned,
    )
    return outcome
