"""``transactions``: transfers credited to payments, one row per (chain, tx_hash, log_index).

``log_index`` is -1 for a transaction's native-coin transfer. ``value`` is in base units,
``amount`` in whole token units.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import BaseUnits, ExactDecimal, UTCDateTime, UUIDType, utcnow


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("chain", "tx_hash", "log_index"),
        Index("ix_transactions_chain_status", "chain", "status"),
        Index("ix_transactions_chain_block_number", "chain", "block_number"),
        Index("ix_transactions_payment_id", "payment_id"),
        # a payment's not-yet-final credits: what a range loads beside its running totals
        Index(
            "ix_transactions_unfinal",
            "payment_id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUIDType(), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUIDType(), ForeignKey("payments.id"))
    chain: Mapped[str] = mapped_column(String(64))
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    block_timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    from_address: Mapped[str] = mapped_column(String(64))
    to_address: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[uuid.UUID | None] = mapped_column(UUIDType(), ForeignKey("tokens.id"))
    value: Mapped[int] = mapped_column(BaseUnits())
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    confirmations: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    late: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # verify_urls: the block hash a second provider agreed with (the credit is verified while it
    # equals block_hash), or the one it disagreed with (reported once per block).
    verified_hash: Mapped[str | None] = mapped_column(String(66))
    verify_failed_hash: Mapped[str | None] = mapped_column(String(66))
    # how many times it disagreed, and the time before which it is not asked again (NULL: never
    # asked): a credit that disagrees is asked again on a backoff of its own
    verify_tries: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    verify_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )
