"""chain reorg facts: when and how deep the newest reorg of each chain was (scanner status)

Revision ID: 6325e011b551
Revises: 286e4e6d7eae
Create Date: 2026-11-25 15:18:21.365845

SQLite runs this in batch mode (render_as_batch): ALTERs become "copy the table". Use
``with op.batch_alter_table(...)`` for changes to existing tables, and name every constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import scanner.db.types

revision: str = "6325e011b551"
down_revision: str | Sequence[str] | None = "286e4e6d7eae"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chain_states", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_reorg_at", scanner.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_reorg_depth", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chain_states", schema=None) as batch_op:
        batch_op.drop_column("last_reorg_depth")
        batch_op.drop_column("last_reorg_at")
