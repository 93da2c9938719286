"""book indexes: the tick's questions answered through indexes, whatever the open-payment book

Revision ID: 9d4e1f7a2b60
Revises: 7b2c9e4d1a30
Create Date: 2026-11-26 05:00:00

- ``ix_payments_expiring``: (chain, expires_at) over the ``pending`` rows only: "the pending
  payments whose expires_at is before the newest final block's time" reads the few that expire,
  never the book. On SQLite the times are stored in one canonical text form (revision
  7b2c9e4d1a30), so the plain comparison the scanner issues is served by the index.
- ``ix_payments_native``: (chain, status, lower(address)) over the native-coin rows only
  (``token_id IS NULL``): whether a chain has an open native payment, and their addresses, without
  reading the token payments.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d4e1f7a2b60"
down_revision: str | Sequence[str] | None = "7b2c9e4d1a30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pending = sa.text("status = 'pending'")
    op.create_index(
        "ix_payments_expiring",
        "payments",
        ["chain", "expires_at"],
        unique=False,
        postgresql_where=pending,
        sqlite_where=pending,
    )
    native = sa.text("token_id IS NULL")
    op.create_index(
        "ix_payments_native",
        "payments",
        ["chain", "status", sa.text("lower(address)")],
        unique=False,
        postgresql_where=native,
        sqlite_where=native,
    )


def downgrade() -> None:
    op.drop_index("ix_payments_native", table_name="payments")
    op.drop_index("ix_payments_expiring", table_name="payments")
