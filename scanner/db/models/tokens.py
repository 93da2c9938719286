"""``tokens``: the token contracts per chain. The table is the source of truth once a row exists."""

from __future__ import annotations

import uuid

from sqlalchemy import Boolean, Integer, String, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import UUIDType


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("chain", "address"),)

    id: Mapped[uuid.UUID] = mapped_column(UUIDType(), primary_key=True)
    chain: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    decimals: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    # Whether the scanner read the token's logs when it last looked (NULL: never looked): a token
    # usable again after it was not is looked back for, across restarts too.
    scanner_enabled: Mapped[bool | None] = mapped_column(Boolean)
