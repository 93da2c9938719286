"""``backfill_jobs``: progress of ``scanner backfill`` runs, so an interrupted one resumes.

One row per (chain, from_block, to_block); ``next_block`` is the first block not yet committed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scanner.db.models.base import Base
from scanner.db.types import UTCDateTime, utcnow


class BackfillJob(Base):
    __tablename__ = "backfill_jobs"
    __table_args__ = (UniqueConstraint("chain", "from_block", "to_block"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64))
    from_block: Mapped[int] = mapped_column(BigInteger)
    to_block: Mapped[int] = mapped_column(BigInteger)
    next_block: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    # A split backfill: the worker holding the job, until when (a dead one's job is taken over).
    lease_instance: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), onupdate=utcnow()
    )
