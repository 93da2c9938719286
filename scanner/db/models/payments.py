"""``payments``: written by the gateway, followed by the scanner.

A gateway creates one with plain SQL giving only ``id, token_id, chain, address, amount,
expires_at``; every other column has a server default. ``amount`` is in whole token units.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, false, func, text
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import ExactDecimal, UTCDateTime, UUIDType, utcnow


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(UUIDType(), primary_key=True)
    token_id: Mapped[uuid.UUID | None] = mapped_column(UUIDType(), ForeignKey("tokens.id"))
    chain: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    amount_received: Mapped[Decimal] = mapped_column(ExactDecimal(), server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    confirmations: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    detected_in_block: Mapped[int | None] = mapped_column(BigInteger)
    # The cursor when the scanner first saw the row (NULL: not yet looked at, so catch up on it).
    seen_at_block: Mapped[int | None] = mapped_column(BigInteger)
    # Set by a trigger when the gateway changes what the rules read; the scanner recomputes the
    # payment and clears it. scanner_rev: bumped by each of the scanner's own updates, so that the
    # trigger tells them apart from the gateway's.
    edited: Mapped[bool] = mapped_column(Boolean, server_default=false())
    scanner_rev: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )


# The matcher's lookup: `chain = :c AND lower(address) IN (...)`, tokens and native alike.
# Gateway-written addresses may be checksummed or upper-case, so the index is on the expression.
Index("ix_payments_lookup", Payment.chain, func.lower(Payment.address))
Index("ix_payments_chain_status", Payment.chain, Payment.status)
# New rows the scanner has not looked at yet: a partial index stays as small as that set.
_UNSEEN = Payment.seen_at_block.is_(None)
Index("ix_payments_unseen", Payment.chain, postgresql_where=_UNSEEN, sqlite_where=_UNSEEN)
# Rows the gateway edited and the scanner has not recomputed yet.
_EDITED = Payment.edited.is_(True)
Index("ix_payments_edited", Payment.chain, postgresql_where=_EDITED, sqlite_where=_EDITED)
# Pending rows by expiry: "which pending payments does the newest final block expire".
_PENDING = Payment.status == "pending"
Index(
    "ix_payments_expiring",
    Payment.chain,
    Payment.expires_at,
    postgresql_where=_PENDING,
    sqlite_where=_PENDING,
)
# Native-coin rows: whether any is open, and their addresses, without reading token payments.
_NATIVE = Payment.token_id.is_(None)
Index(
    "ix_payments_native",
    Payment.chain,
    Payment.status,
    func.lower(Payment.address),
    postgresql_where=_NATIVE,
    sqlite_where=_NATIVE,
)
