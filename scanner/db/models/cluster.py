"""``scanner_instances`` and ``chain_leases``: several ``scanner run`` share the chains.

Each running instance has a row it renews with a heartbeat (``expires_at``); each chain's lease
names the instance scanning it until ``lease_expires_at``. Times are the database server's
(``clock_timestamp()``), so the hosts' clocks do not matter. SQLite (one scanning process) keeps
the tables empty.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import UTCDateTime, utcnow


class ScannerInstance(Base):
    __tablename__ = "scanner_instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ChainLease(Base):
    __tablename__ = "chain_leases"

    chain: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str | None] = mapped_column(String(64))  # NULL: handed over, free
    lease_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
