"""payment sums: the scanner's running totals of each payment's counted credits

Revision ID: a3c5e7f9b1d2
Revises: 9d4e6f1a2b3c
Create Date: 2026-11-26 08:00:00

- ``payment_sums``: per payment, the total value (base units of ``token_id``, the payment's
  token when written), number, first and last block of its counted credits, written by the
  scanner with every payment it updates. A range loads only
  the not-yet-final credits of a payment that has a row here and takes the final ones from it;
  a payment without one (credited before this revision, or a row the gateway copied) is read
  in full, as before, and gets its row at its next update. Nothing to backfill.
- ``ix_transactions_unfinal``: (payment_id) over the not-yet-final rows (``status =
  'pending'``): those credits are read without a payment's final history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scanner.db.types import BaseUnits, UTCDateTime, UUIDType, utcnow

revision: str = "a3c5e7f9b1d2"
down_revision: str | Sequence[str] | None = "9d4e6f1a2b3c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_sums",
        sa.Column("payment_id", UUIDType(), nullable=False),
        sa.Column("token_id", UUIDType(), nullable=True),
        sa.Column("counted_value", BaseUnits(), nullable=False),
        sa.Column("counted_credits", sa.Integer(), nullable=False),
        sa.Column("first_block", sa.BigInteger(), nullable=True),
        sa.Column("last_block", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), server_default=utcnow(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_payment_sums_payment_id_payments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payment_sums")),
    )
    unfinal = sa.text("status = 'pending'")
    op.create_index(
        "ix_transactions_unfinal",
        "transactions",
        ["payment_id"],
        unique=False,
        postgresql_where=unfinal,
        sqlite_where=unfinal,
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_unfinal", table_name="transactions")
    op.drop_table("payment_sums")
