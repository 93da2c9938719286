"""initial schema

The whole schema: tokens, payments, transactions, chain_states, blocks, payment_events and
backfill_jobs.

Revision ID: 286e4e6d7eae
Revises:
Create Date: 2026-11-25 13:41:17.147790

SQLite runs this in batch mode (render_as_batch): ALTERs become "copy the table". Use
``with op.batch_alter_table(...)`` for changes to existing tables, and name every constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from scanner.db.types import BaseUnits, ExactDecimal, UTCDateTime, UUIDType, utcnow

revision: str = "286e4e6d7eae"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", UTCDateTime(), server_default=utcnow(), nullable=False)


def _updated_at() -> sa.Column[object]:
    return sa.Column("updated_at", UTCDateTime(), server_default=utcnow(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", UUIDType(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("decimals", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("chain", "address", name=op.f("uq_tokens_chain_address")),
    )
    op.create_table(
        "payments",
        sa.Column("id", UUIDType(), nullable=False),
        sa.Column("token_id", UUIDType(), nullable=True),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("amount_received", ExactDecimal(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("confirmations", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("detected_in_block", sa.BigInteger(), nullable=True),
        sa.Column("seen_at_block", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        _created_at(),
        _updated_at(),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name=op.f("fk_payments_token_id_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    op.create_index("ix_payments_chain_status", "payments", ["chain", "status"])
    op.create_index("ix_payments_lookup", "payments", ["chain", sa.text("lower(address)")])
    unseen = sa.text("seen_at_block IS NULL")
    op.create_index(
        "ix_payments_unseen", "payments", ["chain"], postgresql_where=unseen, sqlite_where=unseen
    )
    op.create_table(
        "transactions",
        sa.Column("id", UUIDType(), nullable=False),
        sa.Column("payment_id", UUIDType(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("block_timestamp", UTCDateTime(), nullable=False),
        sa.Column("from_address", sa.String(length=64), nullable=False),
        sa.Column("to_address", sa.String(length=64), nullable=False),
        sa.Column("token_id", UUIDType(), nullable=True),
        sa.Column("value", BaseUnits(), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("confirmations", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("late", sa.Boolean(), server_default=sa.false(), nullable=False),
        _created_at(),
        _updated_at(),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_transactions_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name=op.f("fk_transactions_token_id_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint(
            "chain", "tx_hash", "log_index", name=op.f("uq_transactions_chain_tx_hash_log_index")
        ),
    )
    op.create_index("ix_transactions_chain_block_number", "transactions", ["chain", "block_number"])
    op.create_index("ix_transactions_chain_status", "transactions", ["chain", "status"])
    op.create_index("ix_transactions_payment_id", "transactions", ["payment_id"])
    op.create_table(
        "chain_states",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("last_scanned_block", sa.BigInteger(), nullable=False),
        sa.Column("last_scanned_hash", sa.String(length=66), nullable=True),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_states")),
        sa.UniqueConstraint("chain", name=op.f("uq_chain_states_chain")),
    )
    op.create_table(
        "blocks",
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.Column("parent_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "number", name=op.f("pk_blocks")),
    )
    op.create_table(
        "payment_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("payment_id", UUIDType(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status_from", sa.String(length=16), nullable=True),
        sa.Column("status_to", sa.String(length=16), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            server_default="{}",
            nullable=False,
        ),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_events_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_payment_events_payment_id", "payment_events", ["payment_id"])
    op.create_table(
        "backfill_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("from_block", sa.BigInteger(), nullable=False),
        sa.Column("to_block", sa.BigInteger(), nullable=False),
        sa.Column("next_block", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill_jobs")),
        sa.UniqueConstraint(
            "chain",
            "from_block",
            "to_block",
            name=op.f("uq_backfill_jobs_chain_from_block_to_block"),
        ),
    )


def downgrade() -> None:
    op.drop_table("backfill_jobs")
    op.drop_index("ix_payment_events_payment_id", table_name="payment_events")
    op.drop_table("payment_events")
    op.drop_table("blocks")
    op.drop_table("chain_states")
    op.drop_index("ix_transactions_payment_id", table_name="transactions")
    op.drop_index("ix_transactions_chain_status", table_name="transactions")
    op.drop_index("ix_transactions_chain_block_number", table_name="transactions")
    op.drop_table("transactions")
    op.drop_index("ix_payments_unseen", table_name="payments")
    op.drop_index("ix_payments_lookup", table_name="payments")
    op.drop_index("ix_payments_chain_status", table_name="payments")
    op.drop_table("payments")
    op.drop_table("tokens")
