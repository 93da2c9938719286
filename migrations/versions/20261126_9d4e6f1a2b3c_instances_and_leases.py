"""instances and leases: several scanner instances share the chains on PostgreSQL

Revision ID: 9d4e6f1a2b3c
Revises: 9d4e1f7a2b60
Create Date: 2026-11-26 05:00:00

- ``scanner_instances``: one row per running ``scanner run``, renewed by its heartbeat.
- ``chain_leases``: which instance scans each chain, until when.
- ``backfill_jobs.lease_instance`` / ``lease_expires_at``: the worker that claimed a job of a
  split backfill, so that a killed worker's job is taken over once its lease expires.
- ``transactions.verified_hash`` / ``verify_failed_hash``: a chain with ``verify_urls`` confirms a
  payment only once a second provider agreed with each counted transfer, in its block.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from scanner.db.types import UTCDateTime, utcnow

revision: str = "9d4e6f1a2b3c"
down_revision: str | Sequence[str] | None = "9d4e1f7a2b60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scanner_instances",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), server_default=utcnow(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), server_default=utcnow(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scanner_instances")),
    )
    op.create_index(
        op.f("ix_scanner_instances_expires_at"), "scanner_instances", ["expires_at"], unique=False
    )
    op.create_table(
        "chain_leases",
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), server_default=utcnow(), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_chain_leases")),
    )
    op.add_column("backfill_jobs", sa.Column("lease_instance", sa.String(64), nullable=True))
    op.add_column("backfill_jobs", sa.Column("lease_expires_at", UTCDateTime(), nullable=True))
    op.add_column("transactions", sa.Column("verified_hash", sa.String(66), nullable=True))
    op.add_column("transactions", sa.Column("verify_failed_hash", sa.String(66), nullable=True))


def downgrade() -> None:
    op.drop_column("transactions", "verify_failed_hash")
    op.drop_column("transactions", "verified_hash")
    op.drop_column("backfill_jobs", "lease_expires_at")
    op.drop_column("backfill_jobs", "lease_instance")
    op.drop_table("chain_leases")
    op.drop_index(op.f("ix_scanner_instances_expires_at"), table_name="scanner_instances")
    op.drop_table("scanner_instances")
