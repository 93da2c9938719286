"""The retention statements of docs/operations.md, run as the page shows them after a real scan:
an old final payment goes with its transactions, events and sums (no foreign key in the way), an
open one stays whole, and the scanner goes on scanning."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from tests.e2e.actions import pay
from tests.e2e.harness import Harness

OLD, OPEN = "0x" + "c1" * 20, "0x" + "c2" * 20
PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _statements(backend: str) -> list[str]:
    """The page's retention block for ``backend``, one statement each, without BEGIN/COMMIT."""
    section = PAGE.read_text("utf-8")
    section = section[section.index("## Retention") :]
    marker = "-- PostgreSQL" if backend == "postgresql" else "-- SQLite"
    start = section.index(marker)
    block = section[start : section.index("```", start)]
    body = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    parts = [part.strip() for part in body.split(";")]
    return [p for p in parts if p and not p.startswith(("BEGIN", "COMMIT"))]


async def _count(h: Harness, table: str, payment: str) -> int:
    column = "id" if table == "payments" else "payment_id"
    async with h.engine.connect() as conn:
        found = await conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE {column} = :p"), {"p": payment}
        )
        return int(found.scalar_one())


async def test_the_documented_retention_removes_old_final_payments_whole(
    h: Harness, db_backend: str
) -> None:
    old = await h.create_payment(OLD, "2")
    still_open = await h.create_payment(OPEN, "5")
    pay(h, OLD, 2_000_000)
    pay(h, OPEN, 1_000_000)  # paid in part: stays pending
    await h.scan()
    h.mine(4)
    await h.scan()
    assert await h.status(old) == "confirmed" and await h.status(still_open) == "pending"
    past = "2020-01-01 00:00:00+00" if db_backend == "postgresql" else "2020-01-01 00:00:00.000000"
    async with h.engine.begin() as conn:  # both made old: only the final one may go
        await conn.execute(text(f"UPDATE payments SET expires_at = '{past}'"))
    tables = ["transactions", "payment_events", "payment_sums", "payments"]
    before = {t: await _count(h, t, still_open) for t in tables}
    assert all([await _count(h, t, old) for t in tables])

    async with h.engine.begin() as conn:
        for statement in _statements(db_backend):
            await conn.execute(text(statement))

    assert [await _count(h, t, old) for t in tables] == [0, 0, 0, 0]
    assert {t: await _count(h, t, still_open) for t in tables} == before
    h.mine(1)
    await h.scan()  # nothing the scanner needs went with it
