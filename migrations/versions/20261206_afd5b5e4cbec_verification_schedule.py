"""verification schedule: each credit a verify_urls provider disagreed with is asked again on a
backoff of its own

Revision ID: afd5b5e4cbec
Revises: a3c5e7f9b1d2
Create Date: 2026-12-06 05:30:00

- ``transactions.verify_tries``: how many times a ``verify_urls`` provider disagreed with the
  credit (the wait before asking again doubles with each).
- ``transactions.verify_after``: not asked again before this time (NULL: never asked). A credit
  that disagrees for good then costs one look per backoff, and never holds back the credits
  after it. Nothing to backfill: rows without a schedule are asked at the next tick.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scanner.db.types import UTCDateTime

revision: str = "afd5b5e4cbec"
down_revision: str | Sequence[str] | None = "a3c5e7f9b1d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "transactions",
        sa.Column("verify_tries", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("transactions", sa.Column("verify_after", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("transactions", "verify_after")
    op.drop_column("transactions", "verify_tries")
