"""webhook deliveries: one row per endpoint and outbox event, and each endpoint's outbox cursor

Revision ID: 2c81b09b5d42
Revises: 6325e011b551
Create Date: 2026-11-26 04:00:55.414171

SQLite runs this in batch mode (render_as_batch): ALTERs become "copy the table". Use
``with op.batch_alter_table(...)`` for changes to existing tables, and name every constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from scanner.db.types import UTCDateTime, UUIDType, utcnow

revision: str = "2c81b09b5d42"
down_revision: str | Sequence[str] | None = "6325e011b551"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")
_FIRST = sa.text("redelivery = false")


def _stamp(name: str) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(), server_default=utcnow(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "webhook_cursors",
        sa.Column("endpoint_key", sa.String(length=32), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("endpoint_key", name=op.f("pk_webhook_cursors")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", UUIDType(), nullable=False),
        sa.Column("endpoint", sa.Integer(), nullable=False),
        sa.Column("endpoint_key", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("payment_id", UUIDType(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("redelivery", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=36), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("event_created_at", UTCDateTime(), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "uq_webhook_deliveries_endpoint_event",
        "webhook_deliveries",
        ["endpoint_key", "event_id"],
        unique=True,
        postgresql_where=_FIRST,
        sqlite_where=_FIRST,
    )
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["endpoint_key", "payment_id", "event_id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.create_index(
        "ix_webhook_deliveries_status_created", "webhook_deliveries", ["status", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_status_created", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    op.drop_index("uq_webhook_deliveries_endpoint_event", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_cursors")
