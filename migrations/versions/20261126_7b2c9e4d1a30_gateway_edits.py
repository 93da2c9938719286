"""gateway edits: payments edited by the gateway are flagged for the scanner; SQLite times canonical

Revision ID: 7b2c9e4d1a30
Revises: 2c81b09b5d42
Create Date: 2026-11-26 04:30:00

- ``payments.edited``: set by a trigger when anyone but the scanner changes ``token_id``,
  ``amount``, ``expires_at``, ``created_at``, ``address`` or ``status``; the scanner recomputes
  the payment and clears it. A partial index serves "the edited payments of a chain".
- ``payments.scanner_rev``: the scanner increments it in each of its own updates, which is how
  the trigger tells the scanner's writes from the gateway's.
- ``tokens.scanner_enabled``: whether the scanner read the token's logs when it last looked
  (NULL: never looked). A token found usable again after it was not (disabled, halted) has its
  open payments looked back for, across restarts too.
- SQLite only: ``created_at`` and ``expires_at`` are rewritten by triggers into the one canonical
  text form (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC) whatever form the gateway wrote that SQLite's
  date functions read (ISO-8601 with ``T``, ``Z`` or an offset; Unix seconds as a number), so that
  they compare correctly as text and through an index. A value SQLite cannot read is left as it
  is (the scanner reports the row as invalid).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7b2c9e4d1a30"
down_revision: str | Sequence[str] | None = "2c81b09b5d42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WATCHED = ("token_id", "amount", "expires_at", "created_at", "address", "status")

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION scanner_payment_edited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.scanner_rev IS NOT DISTINCT FROM OLD.scanner_rev
       AND (NEW.token_id, NEW.amount, NEW.expires_at, NEW.created_at, NEW.address, NEW.status)
           IS DISTINCT FROM
           (OLD.token_id, OLD.amount, OLD.expires_at, OLD.created_at, OLD.address, OLD.status)
    THEN
        NEW.edited := true;
    END IF;
    RETURN NEW;
END
$$
"""
PG_TRIGGER = (
    "CREATE TRIGGER payments_edited BEFORE UPDATE ON payments"
    " FOR EACH ROW EXECUTE FUNCTION scanner_payment_edited()"
)

_CHANGED = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in WATCHED)
SQLITE_EDITED = f"""
CREATE TRIGGER payments_edited AFTER UPDATE OF {", ".join(WATCHED)} ON payments
FOR EACH ROW WHEN NEW.scanner_rev IS OLD.scanner_rev AND ({_CHANGED})
BEGIN
    UPDATE payments SET edited = 1 WHERE rowid = NEW.rowid;
END
"""

_DIGITS = "[0-9]"
CANONICAL_GLOB = (
    f"{_DIGITS * 4}-{_DIGITS * 2}-{_DIGITS * 2} {_DIGITS * 2}:{_DIGITS * 2}:{_DIGITS * 2}"
    f".{_DIGITS * 6}"
)


def canonical(value: str) -> str:
    """SQLite: ``value`` in the canonical text form, or NULL when SQLite cannot read it. A number
    (which the column's TEXT affinity stores as digits) is Unix seconds, as the scanner reads it
    (SQLite alone would take digits for a Julian day)."""
    unix_digits = f"({value} GLOB '[0-9]*' AND {value} NOT GLOB '*[^0-9.]*')"
    return (
        f"(CASE WHEN typeof({value}) IN ('integer', 'real') OR {unix_digits}"
        f" THEN strftime('%Y-%m-%d %H:%M:%f', {value}, 'unixepoch')"
        f" ELSE strftime('%Y-%m-%d %H:%M:%f', {value}) END || '000')"
    )


def needs_canonical(value: str) -> str:
    return (
        f"NOT (typeof({value}) = 'text' AND {value} GLOB '{CANONICAL_GLOB}')"
        f" AND {canonical(value)} IS NOT NULL"
    )


def sqlite_time_triggers() -> list[str]:
    statements = []
    for column in ("created_at", "expires_at"):
        body = (
            f"UPDATE payments SET {column} = {canonical('NEW.' + column)},"
            " scanner_rev = scanner_rev + 1 WHERE rowid = NEW.rowid;"
        )
        when = needs_canonical("NEW." + column)
        statements.append(
            f"CREATE TRIGGER payments_{column}_insert AFTER INSERT ON payments"
            f" FOR EACH ROW WHEN {when} BEGIN {body} END"
        )
        statements.append(
            f"CREATE TRIGGER payments_{column}_update AFTER UPDATE OF {column} ON payments"
            f" FOR EACH ROW WHEN {when} BEGIN {body} END"
        )
    return statements


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both databases: a batch "copy the table" on SQLite would
    # drop the expression index ix_payments_lookup.
    op.add_column(
        "payments", sa.Column("edited", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column(
        "payments",
        sa.Column("scanner_rev", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("tokens", sa.Column("scanner_enabled", sa.Boolean(), nullable=True))
    edited = sa.text("edited")
    op.create_index(
        "ix_payments_edited",
        "payments",
        ["chain"],
        unique=False,
        postgresql_where=edited,
        sqlite_where=edited,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
        return
    op.execute(SQLITE_EDITED)
    for statement in sqlite_time_triggers():
        op.execute(statement)
    for column in ("created_at", "expires_at"):
        op.execute(
            f"UPDATE payments SET {column} = {canonical(column)} WHERE {needs_canonical(column)}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS payments_edited ON payments")
        op.execute("DROP FUNCTION IF EXISTS scanner_payment_edited()")
    else:
        op.execute("DROP TRIGGER IF EXISTS payments_edited")
        for column in ("created_at", "expires_at"):
            for when in ("insert", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS payments_{column}_{when}")
    op.drop_index("ix_payments_edited", table_name="payments")
    op.drop_column("tokens", "scanner_enabled")
    op.drop_column("payments", "scanner_rev")  # SQLite ≥ 3.35: a plain DROP COLUMN
    op.drop_column("payments", "edited")
