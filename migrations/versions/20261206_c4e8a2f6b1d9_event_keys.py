"""event keys: an identity for every outbox event that a failover cannot hand out again

Revision ID: c4e8a2f6b1d9
Revises: afd5b5e4cbec
Create Date: 2026-12-06 06:00:00

- ``payment_events.event_key``: unique text (nullable only so that SQLite's table is not
  rebuilt), written by the scanner with every event (a uuid
  derived from the payment, the event's place among its events and its content). Events written
  before this revision get ``00000000-0000-0000-0000-<id in 12 hex digits>``: unique, and of a
  form no derived key has.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4e8a2f6b1d9"
down_revision: str | Sequence[str] | None = "afd5b5e4cbec"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEGACY = {
    "postgresql": "'00000000-0000-0000-0000-' || lpad(to_hex(id), 12, '0')",
    "sqlite": "'00000000-0000-0000-0000-' || printf('%012x', id)",
}


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: SQLite's table is not rebuilt (a rebuild would drop
    # its AUTOINCREMENT, and ids could then be reused). Nullable for that reason; the scanner
    # writes a key with every event.
    op.add_column("payment_events", sa.Column("event_key", sa.String(length=36), nullable=True))
    op.execute(f"UPDATE payment_events SET event_key = {_LEGACY[op.get_bind().dialect.name]}")
    op.create_index("uq_payment_events_event_key", "payment_events", ["event_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_payment_events_event_key", table_name="payment_events")
    op.execute("ALTER TABLE payment_events DROP COLUMN event_key")  # SQLite 3.35+: no rebuild
