"""``payment_sums``: the scanner's running totals of each payment's counted credits.

Written by the scanner beside every payment it updates, in the same transaction; never by the
gateway (a copied or hand-written ``payments`` row has none, and is read in full). A range
then loads only a payment's not-yet-final credits and takes the final ones from here, so its
cost does not grow with the payment's history.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import BaseUnits, UTCDateTime, UUIDType, utcnow


class PaymentSum(Base):
    __tablename__ = "payment_sums"

    payment_id: Mapped[uuid.UUID] = mapped_column(
        UUIDType(), ForeignKey("payments.id", ondelete="CASCADE"), primary_key=True
    )
    # the payment's token when written: the totals are in its base units (NULL: native coin)
    token_id: Mapped[uuid.UUID | None] = mapped_column(UUIDType())
    counted_value: Mapped[int] = mapped_column(BaseUnits())  # base units
    counted_credits: Mapped[int] = mapped_column(Integer)
    first_block: Mapped[int | None] = mapped_column(BigInteger)
    last_block: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )
