"""``blocks``: recent block hashes below the cursor, what reorg checks compare against."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import UTCDateTime


class Block(Base):
    __tablename__ = "blocks"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    parent_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
