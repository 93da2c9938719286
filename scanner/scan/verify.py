"""``verify_urls``: a second provider's word before a payment is ``confirmed``.

    final credits not yet verified (db) ─▶ each one's receipt from a verify_urls provider (RPC)
    ─▶ compare: block hash, success, the log at its index (token, Transfer, recipient, value),
       or for the native coin the transaction's recipient and value
    ─▶ agreement: ``verified_hash`` = its block hash (the next plan confirms the payment)
       disagreement: ``verification_failed`` event, error log and metric, once per block; the
       payment stays ``confirming``; the credit is asked again after a backoff of its own
       (:data:`RETRY_FIRST` seconds, doubling up to :data:`RETRY_MAX`: a provider that heals
       confirms it), and never holds back the credits after it
       no provider answers: ``verification_delayed``, tried again next tick (never skipped),
       behind the credits waiting longer

The plan (pure) stays as it was but for one rule: with ``verify_urls`` a credit is final only
once verified in its block (:func:`scanner.core.finality.credit_final`), so the payment stays
``confirming`` and the tick keeps loading it until then; late credits are verified like the
others (else their payments would be loaded every tick for ever). A provider lagging behind the
credit's block delays; one past the block that knows no such transaction (or another block)
disagrees.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.chain.shapes import Transaction
from scanner.config import ChainSettings
from scanner.core.decode import TRANSFER_TOPIC, strict_hex_int
from scanner.core.model import Event, Log
from scanner.core.plan import OutboxRow
from scanner.db import events
from scanner.db import verify as stored
from scanner.errors import RpcError
from scanner.observe.metrics import Metrics, NullMetrics
from scanner.scan.context import ChainContext, lock_chain

log = structlog.get_logger(__name__)
VERIFICATION_FAILED = "verification_failed"
RETRY_FIRST = 30.0  # seconds before a credit a provider disagreed with is asked again
RETRY_MAX = 600.0  # the longest wait, however often it disagreed


class Lagging(Exception):
    """The provider has not reached the credit's block yet: ask again later."""


class Verifier:
    def __init__(
        self,
        chain: ChainSettings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.chain = chain.name
        self.sessions = sessions
        self.metrics = metrics or NullMetrics()
        self.client = RpcClient(
            chain.name,
            [u.get_secret_value() for u in chain.verify_urls],
            timeout=chain.rpc_timeout,
            max_response_bytes=chain.rpc_max_response_bytes,
            max_attempts=2,
            observer=metrics,
            max_rps=chain.rpc_max_rps,
            headers=chain.headers(),
        )
        self.reader = ChainReader(self.client)
        self.clock = clock or (lambda: datetime.now(UTC))  # when a credit is due again
        self._head: int | None = None  # the verifier's head, read once a round

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run(self, ctx: ChainContext, final_block: int) -> int:
        """Check a page of the chain's unverified final credits that are due; how many were
        verified."""
        at, self._head = self.clock(), None
        async with self.sessions() as session:
            rows = await stored.awaiting(session, ctx.name, final_block, at)
        verdicts: list[tuple[stored.Awaiting, list[str]]] = []
        delayed: stored.Awaiting | None = None
        for row in rows:
            try:
                verdicts.append((row, await self._check(row)))
            except (RpcError, Lagging) as exc:
                self._delayed(row, exc)
                delayed = row
                break  # the rest next tick; what was checked is recorded now
        if verdicts or delayed is not None:
            async with self.sessions() as session, session.begin():
                await lock_chain(session, ctx)
                await self._record(session, verdicts, at)
                if delayed is not None:
                    await stored.put_off(session, self.chain, delayed, at)
        return sum(1 for _, problems in verdicts if not problems)

    async def _record(
        self,
        session: AsyncSession,
        verdicts: list[tuple[stored.Awaiting, list[str]]],
        at: datetime,
    ) -> None:
        outbox = []
        for row, problems in verdicts:
            if not problems:
                await stored.mark_verified(session, self.chain, row)
                log.info(
                    "transfer_verified",
                    chain=self.chain,
                    tx_hash=row.tx_hash,
                    log_index=row.log_index,
                    block=row.block_number,
                )
                continue
            await stored.mark_failed(session, self.chain, row, at + retry_in(row.tries))
            if not row.failed_before:
                outbox.append(self._failed(row, problems))
        await events.append(session, outbox)

    def _failed(self, row: stored.Awaiting, problems: list[str]) -> OutboxRow:
        log.error(
            "verification_failed",
            chain=self.chain,
            payment_id=str(row.payment_key),
            tx_hash=row.tx_hash,
            log_index=row.log_index,
            block=row.block_number,
            disagrees_on=problems,
            verifier=self.client.active_url,
        )
        self.metrics.verification_failed.labels(self.chain).inc()
        data = {
            "tx_hash": row.tx_hash,
            "log_index": row.log_index,
            "block_number": row.block_number,
            "block_hash": row.block_hash,
            "disagrees_on": ",".join(problems),
        }
        event = Event(_uuid(row.payment_key), VERIFICATION_FAILED, None, None, data)
        return OutboxRow(event, data, row.payment_key)

    def _delayed(self, row: stored.Awaiting, exc: Exception) -> None:
        log.warning(
            "verification_delayed",
            chain=self.chain,
            tx_hash=row.tx_hash,
            block=row.block_number,
            reason=str(exc),
        )
        self.metrics.verification_delayed.labels(self.chain).inc()

    async def _check(self, row: stored.Awaiting) -> list[str]:
        """What the provider disagrees on (empty: it agrees)."""
        receipt = await self.reader.receipt(row.tx_hash)
        if receipt is None:
            head = await self._head_at_least(row.block_number)
            if head < row.block_number:
                raise Lagging(f"the verifier's head {head} is below block {row.block_number}")
            return ["transaction"]  # past the block, and no such transaction
        problems = []
        if receipt.block_hash != row.block_hash.lower():
            problems.append("block_hash")
        if receipt.status != 1:
            problems.append("status")
        if row.log_index < 0:
            tx = await self.reader.transaction(row.tx_hash)
            return problems + _native_problems(tx, row)
        return problems + _log_problems(receipt.logs, row)

    async def _head_at_least(self, block: int) -> int:
        """The verifier's head: read once a round (a page of missing receipts costs one call,
        not one each), again only when it was below ``block``."""
        if self._head is None or self._head < block:
            self._head = await self.reader.head()
        return self._head


def retry_in(tries: int) -> timedelta:
    """How long a credit that disagreed ``tries`` times before waits after one more."""
    return timedelta(seconds=min(RETRY_FIRST * 2 ** min(tries, 32), RETRY_MAX))


def _log_problems(logs: tuple[Log, ...], row: stored.Awaiting) -> list[str]:
    found = [e for e in logs if strict_hex_int(e["logIndex"]) == row.log_index]
    if not found:
        return ["log_index"]
    entry = found[0]
    topics = [t.lower() for t in entry["topics"]]
    problems = []
    if entry["address"].lower() != row.token:
        problems.append("token")
    if len(topics) != 3 or topics[0] != TRANSFER_TOPIC:
        return [*problems, "event"]
    if "0x" + topics[2][-40:] != row.to_address:
        problems.append("recipient")
    if strict_hex_int(entry["data"]) != row.value:
        problems.append("value")
    return problems


def _native_problems(tx: Transaction | None, row: stored.Awaiting) -> list[str]:
    if tx is None:
        return ["transaction"]
    problems = []
    if tx.to != row.to_address:
        problems.append("recipient")
    if tx.value != row.value:
        problems.append("value")
    return problems


def _uuid(key: object) -> UUID:
    return key if isinstance(key, UUID) else UUID(str(key))
