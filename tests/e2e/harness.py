"""A real chain, a real token, a real database and the real scanner, driven in-process.

The gateway side writes payments with plain SQL (as a gateway would); the scanner scans until
the head with no sleeps; assertions read rows. Times come from the node's block timestamps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.chain.reader import ChainReader
from scanner.config import ChainSettings, Settings
from scanner.devchain import DevChain
from scanner.observe.metrics import Metrics
from scanner.scan.live import ChainScanner
from scanner.scan.parts import ChainParts
from scanner.testkit.gateway import NewPayment, db_id, insert_payments, token_row_id
from scanner.testkit.settings import CHAIN
from tests.support.wait import EVERY, WITHIN, until


@dataclass
class Harness:
    chain: DevChain
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    token: str  # 6 decimals
    token18: str  # 18 decimals
    chain_settings: ChainSettings
    metrics: Metrics = field(default_factory=Metrics)
    customer: str = ""
    scanner: ChainScanner | None = None

    # -- the scanner --------------------------------------------------------------------------

    def make_scanner(self, **overrides: Any) -> ChainScanner:
        chain = (
            self.chain_settings.model_copy(update=overrides) if overrides else self.chain_settings
        )
        reader = ChainReader.from_settings(chain, self.metrics)
        return ChainScanner(ChainParts(chain, reader, self.sessions, metrics=self.metrics))

    async def scan(self) -> None:
        if self.scanner is None:
            self.scanner = self.make_scanner()
            await self.scanner.prepare()
        await self.scanner.scan_until_head()

    async def close(self) -> None:
        if self.scanner is not None:
            await self.scanner.reader.client.aclose()

    # -- chain time -----------------------------------------------------------------------------

    def now(self) -> int:
        """The latest block's timestamp: the chain's time, not the test's clock."""
        return int(self.chain.block("latest")["timestamp"], 16)

    def mine(self, n: int = 1) -> None:
        self.chain.mine(n)

    # -- the gateway ----------------------------------------------------------------------------

    async def token_id(self, token: str | None) -> str | None:
        if token is None:
            return None
        async with self.engine.connect() as conn:
            return str(await token_row_id(conn, CHAIN, token))

    async def create_payment(
        self,
        address: str,
        amount: str | Decimal,
        *,
        token: str | bool | None = True,
        expires_in: float = 3600,
        created_at: float | None = None,
    ) -> str:
        """INSERT a payment as a gateway does: plain SQL, amount as a decimal string."""
        token_address = self.token if token is True else (None if token is False else token)
        if self.scanner is None:
            await self.scan()  # tokens rows exist once the scanner has started
        token_id = await self.token_id(token_address)
        created = self.now() if created_at is None else created_at
        payment_id = str(uuid.uuid4())
        payment = NewPayment(
            payment_id,
            token_id,
            self.chain_settings.name,
            address,
            str(amount),
            created + expires_in,
            created,
        )
        async with self.engine.begin() as conn:
            await insert_payments(conn, [payment])
        return payment_id

    # -- reading what the gateway sees ----------------------------------------------------------

    async def payment(self, payment_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        text(
                            "SELECT status, amount, amount_received, confirmations,"
                            " detected_in_block FROM payments WHERE id = :id"
                        ),
                        {"id": db_id(self.engine, payment_id)},
                    )
                )
                .mappings()
                .one()
            )
        out = dict(row)
        out["amount_received"] = Decimal(str(out["amount_received"]))
        out["amount"] = Decimal(str(out["amount"]))
        return out

    async def status(self, payment_id: str) -> str:
        return str((await self.payment(payment_id))["status"])

    async def until_status(
        self,
        payment_id: str,
        status: str,
        within: float = WITHIN,
        every: float = EVERY,
        detail: Callable[[], Any] | None = None,
    ) -> None:
        """Until the payment's row shows ``status``, written by a scanner that runs beside the
        test (a task, a process); fails showing ``detail()``, by default the row as it is."""

        async def shows() -> bool:
            return await self.status(payment_id) == status

        show = detail or (lambda: self.payment(payment_id))
        await until(shows, within, f"payment {status}", every, detail=show)

    async def transactions(self, payment_id: str | None = None) -> list[dict[str, Any]]:
        where, params = "", {}
        if payment_id is not None:
            where, params = "WHERE payment_id = :id", {"id": db_id(self.engine, payment_id)}
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        text(
                            "SELECT payment_id, tx_hash, log_index, block_number, block_hash,"
                            f" value, amount, status, late, confirmations FROM transactions {where}"
                            " ORDER BY block_number, log_index"
                        ),
                        params,
                    )
                )
                .mappings()
                .all()
            )
        return [
            dict(r) | {"value": int(r["value"]), "payment_id": str(r["payment_id"])} for r in rows
        ]

    async def events(self, payment_id: str) -> list[tuple[str, str | None, str | None]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT type, status_from, status_to FROM payment_events"
                    " WHERE payment_id = :id ORDER BY id"
                ),
                {"id": db_id(self.engine, payment_id)},
            )
            return [(r[0], r[1], r[2]) for r in rows]


async def stored_cursor(h: Harness) -> int:
    """The chain's stored cursor (``chain_states.last_scanned_block``) in ``h``'s database."""
    async with h.engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT last_scanned_block FROM chain_states WHERE chain = :c"), {"c": CHAIN}
            )
        ).scalar_one()
    return int(value)
