"""``chain_states``: each chain's cursor, the last block the live scan committed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import UTCDateTime, utcnow


class ChainState(Base):
    __tablename__ = "chain_states"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64), unique=True)
    last_scanned_block: Mapped[int] = mapped_column(BigInteger)
    last_scanned_hash: Mapped[str | None] = mapped_column(String(66))
    # The newest reorg the live scan walked back from (``scanner status`` shows it).
    last_reorg_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_reorg_depth: Mapped[int | None] = mapped_column(Integer)
    # The sweep (scan/sweep.py): the newest final block whose logs were read again (None: not
    # begun), how many transfers it found that the first read had left out, and when last.
    swept_block: Mapped[int | None] = mapped_column(BigInteger)
    logs_missed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_logs_missed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )
