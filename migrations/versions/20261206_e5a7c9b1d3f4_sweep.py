"""sweep: each chain's swept block and the logs its sweep found missing (scanner status)

Revision ID: e5a7c9b1d3f4
Revises: c4e8a2f6b1d9
Create Date: 2026-12-06 05:30:00

- ``chain_states.swept_block``: the newest final block whose Transfer logs the sweep read a
  second time (NULL: the sweep has not begun; it begins at the final block of its first tick,
  so a database upgraded with months of history is not read again).
- ``chain_states.logs_missed`` / ``last_logs_missed_at``: how many transfers the sweep found
  that the first read had left out, and when it last found one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scanner.db.types import UTCDateTime

revision: str = "e5a7c9b1d3f4"
down_revision: str | Sequence[str] | None = "c4e8a2f6b1d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chain_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("swept_block", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("logs_missed", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("last_logs_missed_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chain_states", schema=None) as batch_op:
        batch_op.drop_column("last_logs_missed_at")
        batch_op.drop_column("logs_missed")
        batch_op.drop_column("swept_block")
