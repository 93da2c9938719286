"""The simulation's gateway: creates, edits, cancels and reopens payments with plain SQL, as a
gateway does, under the rules that keep the oracle exact (see ``tests/sim``):

- one native payment stays open all along (full blocks, where native transfers are, are read
  only while one is: a known limit of the scanner);
- each payment gets an address of its own (a fresh one, or for a native payment now and then
  one whose code reverts every call: it can never be paid);
- ``created_at`` is the chain's time now, or up to ``BACKDATE_MAX`` seconds before it (a slow
  commit: the scanner may have passed it and must look back);
- edits (``amount``, ``expires_at``) and cancels touch only open payments, a reopen (``pending``
  with a new expiry) only an expired one; each is one ``UPDATE ... WHERE status IN (...)``, so an
  edit never lands on a payment the scanner has just made final.
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.testkit.gateway import NewPayment, db_id, db_time, insert_payments
from scanner.testkit.settings import CHAIN
from tests.sim.oracle import GatewayRow

BACKDATE_MAX = 60
OPEN = ("pending", "confirming")


@dataclass(frozen=True)
class Asset:
    """A token (``address`` None: the native coin) as the gateway knows it."""

    symbol: str
    address: str | None
    decimals: int
    token_id: Any  # tokens.id, None for the native coin


@dataclass
class Known:
    """What the gateway believes of a payment it made (the row may have moved on since)."""

    id: str
    asset: Asset
    address: str
    amount: int  # base units
    expires_at: int
    paid: int = 0  # base units the schedule has sent (some may be reorged away)


@dataclass
class Gateway:
    engine: AsyncEngine
    assets: list[Asset]
    reverting: list[str]  # native-payment addresses that revert every call
    known: dict[str, Known] = field(default_factory=dict)
    status_edits: dict[str, list[str]] = field(default_factory=dict)  # id -> "cancel"/"reopen"

    async def create(self, rng: random.Random, now: int, life: int) -> Known:
        asset = rng.choice(self.assets)
        address = f"0x{rng.getrandbits(160):040x}"
        if asset.address is None and self.reverting and rng.random() < 0.15:
            address = self.reverting.pop()
        amount = rng.randrange(10 ** (asset.decimals - 2), 10 ** (asset.decimals + 2))
        created = now - rng.choice((0, 0, rng.randrange(BACKDATE_MAX)))
        payment_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        known = Known(payment_id, asset, address, amount, created + life)
        row = NewPayment(
            known.id,
            asset.token_id,
            CHAIN,
            _spelled(rng, address),
            _units(amount, asset.decimals),
            known.expires_at,
            created,
        )
        async with self.engine.begin() as conn:
            await insert_payments(conn, [row])
        self.known[known.id] = known
        return known

    async def keep_native_open(self, now: int) -> None:
        """A native payment nobody pays, open all run long: the scanner reads full blocks only
        while a native payment is open (a known limit), and the oracle sees every block."""
        row = NewPayment(
            str(uuid.uuid4()), None, CHAIN, "0x" + os.urandom(20).hex(), "1000000", now + 10**8, now
        )
        async with self.engine.begin() as conn:
            await insert_payments(conn, [row])

    async def edit_amount(self, known: Known, amount: int) -> bool:
        done = await self._update(
            known.id, OPEN, "amount = :amount", amount=_units(amount, known.asset.decimals)
        )
        if done:
            known.amount = amount
        return done

    async def edit_expiry(self, known: Known, expires_at: int) -> bool:
        when = db_time(self.engine, expires_at)
        done = await self._update(known.id, OPEN, "expires_at = :expires", expires=when)
        if done:
            known.expires_at = expires_at
        return done

    async def cancel(self, known: Known) -> bool:
        done = await self._update(known.id, (*OPEN, "expired"), "status = 'cancelled'")
        if done:
            self.status_edits.setdefault(known.id, []).append("cancel")
        return done

    async def reopen(self, known: Known, expires_at: int) -> bool:
        when = db_time(self.engine, expires_at)
        done = await self._update(
            known.id, ("expired",), "status = 'pending', expires_at = :expires", expires=when
        )
        if done:
            known.expires_at = expires_at
            self.status_edits.setdefault(known.id, []).append("reopen")
        return done

    async def _update(
        self, payment_id: str, statuses: tuple[str, ...], assign: str, **binds: Any
    ) -> bool:
        allowed = ", ".join(f"'{s}'" for s in statuses)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(f"UPDATE payments SET {assign} WHERE id = :id AND status IN ({allowed})"),
                {"id": db_id(self.engine, payment_id), **binds},
            )
        return bool(result.rowcount)

    async def statuses(self) -> dict[str, str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, status FROM payments"))
            return {str(r[0]): str(r[1]) for r in rows}

    async def final_rows(self) -> list[GatewayRow]:
        """Every payment as the gateway's columns say now (amounts and times as stored)."""
        by_token = {str(a.token_id): a for a in self.assets if a.token_id is not None}
        native = next(a for a in self.assets if a.address is None)
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT id, token_id, address, amount, created_at, expires_at, status"
                    " FROM payments"
                )
            )
            found = list(rows)
        out = []
        for r in found:
            asset = native if r[1] is None else by_token[str(r[1])]
            out.append(
                GatewayRow(
                    id=str(r[0]),
                    token=asset.address,
                    decimals=asset.decimals,
                    address=str(r[2]).lower(),
                    amount=Decimal(str(r[3])),
                    created_at=_unix(r[4]),
                    expires_at=_unix(r[5]),
                    status=str(r[6]),
                )
            )
        return out


def _units(base: int, decimals: int) -> str:
    return format(Decimal(base).scaleb(-decimals), "f")


def _spelled(rng: random.Random, address: str) -> str:
    """The address as a gateway may write it: lower-case, or upper-case hex after ``0x``."""
    return address if rng.random() < 0.7 else "0x" + address[2:].upper()


def _unix(value: Any) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return int(moment.timestamp())
