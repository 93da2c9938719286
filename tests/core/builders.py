"""Small builders for core tests: payments, transfers and finality on a toy chain.

Block ``n`` has timestamp ``T0 + 12 * n`` and hash ``block_hash(n)`` (``variant`` gives the hash
of a competing block at the same height, for reorgs).
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from scanner.core.finality import finality_at
from scanner.core.model import Finality, Payment, Status, Transfer

T0 = 1_700_000_000
BLOCK_TIME = 12
GRACE = 300
TOKEN = "0x" + "aa" * 20
ADDRESS = "0x" + "bb" * 20
OTHER_ADDRESS = "0x" + "cc" * 20
SENDER = "0x" + "dd" * 20


def ts(block: int) -> int:
    return T0 + BLOCK_TIME * block


def block_hash(number: int, variant: int = 0) -> str:
    return "0x" + format(variant, "08x") + format(number, "056x")


def pid(n: int) -> UUID:
    return UUID(int=n)


def payment(
    n: int,
    amount: int,
    *,
    created: float = T0,
    expires: float = T0 + 3600,
    status: Status = "pending",
    address: str = ADDRESS,
    token: str | None = TOKEN,
) -> Payment:
    return Payment(
        id=pid(n),
        token=token,
        address=address,
        amount=amount,
        status=status,
        created_at=created,
        expires_at=expires,
    )


def transfer(
    tx: int,
    block: int,
    value: int,
    *,
    log_index: int = 0,
    to: str = ADDRESS,
    token: str | None = TOKEN,
    variant: int = 0,
    timestamp: int | None = None,
) -> Transfer:
    return Transfer(
        token=token,
        tx_hash="0x" + format(tx, "064x"),
        log_index=log_index,
        block_number=block,
        block_hash=block_hash(block, variant),
        block_timestamp=ts(block) if timestamp is None else timestamp,
        from_address=SENDER,
        to_address=to,
        value=value,
    )


#: Every block's timestamp on the toy chain (blocks 0 .. 9999).
TIMESTAMPS: Mapping[int, int] = {n: ts(n) for n in range(10_000)}


def fin(checked: int, required: int = 3) -> Finality:
    """Block-mode finality on the toy chain."""
    return finality_at(checked, required=required, tag_block=None, timestamps=TIMESTAMPS)
