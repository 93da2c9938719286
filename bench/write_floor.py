"""The database's own floor under "every log credited" (the 50,000 credited/s target).

A credited transfer is a ``transactions`` row (six indexes, two foreign keys) and at least one
``payment_events`` row (an index, a foreign key), and every range rewrites its payments. This
script writes such rows for the deposit workload of ``bench.backfill --deposit`` (made up here,
of the same shape) into a fresh migrated PostgreSQL database, with nothing of the scanner
around them (:func:`bench.floor.pg_write`): one ``COPY`` of every transaction row, one of every
event row (binary, asyncpg), and the payment updates of ``--ranges`` ranges. Their sum is what
the database alone needs; the credited rate it allows is a ceiling on any scanner writing these
rows on this machine. (``bench.backfill --deposit`` measures the same floor of the very rows it
wrote, in the same run, on either database.)

    python -m bench.write_floor                     # 5,000 payments x 20 transfers
    python -m bench.write_floor --copy-formats      # then its rows by binary and by text COPY

``--copy-formats``: after the floor, the ``transactions`` rows are stored again (the table
emptied first), by asyncpg's binary ``COPY`` and by a text ``COPY`` whose lines Python makes
(each distinct value formatted once), each timed with the CPU this process spent on it: which
side, the client's encoding or the server's storing, a ``COPY`` of these rows waits for.

Figures are printed, never judged: the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg  # type: ignore[import-untyped]

from bench.database import fresh_database, workdir
from bench.floor import FloorRows, pg_dsn, pg_write, print_floor
from scanner.testkit.postgres import PG_ADMIN_URL

CHAIN = "bench"
TX_COLUMNS = (
    "id", "payment_id", "chain", "tx_hash", "log_index", "block_number", "block_hash",
    "block_timestamp", "from_address", "to_address", "token_id", "value", "amount",
    "confirmations", "status", "late", "created_at", "updated_at",
)  # fmt: skip
EVENT_COLUMNS = ("payment_id", "type", "status_from", "status_to", "data", "created_at")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=5_000)
    parser.add_argument("--transfers", type=int, default=20, help="per payment")
    parser.add_argument("--ranges", type=int, default=11, help="commits that update payments")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL)
    parser.add_argument(
        "--copy-formats",
        action="store_true",
        help="then store the transactions rows again by binary and by text COPY, each timed",
    )
    return parser.parse_args(argv)


async def seed(conn: asyncpg.Connection, payments: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    token = uuid.uuid4()
    await conn.execute(
        "INSERT INTO tokens (id, chain, address, symbol, decimals) VALUES ($1, $2, $3, 'T', 6)",
        token,
        CHAIN,
        "0x" + "aa" * 20,
    )
    ids = [uuid.uuid4() for _ in range(payments)]
    expires = datetime.now(UTC) + timedelta(days=30)
    await conn.copy_records_to_table(
        "payments",
        records=[(i, CHAIN, f"0x{n:040x}", token, Decimal(1), expires) for n, i in enumerate(ids)],
        columns=["id", "chain", "address", "token_id", "amount", "expires_at"],
    )
    await conn.execute("ANALYZE payments")
    return token, ids


def transaction_rows(token: uuid.UUID, ids: list[uuid.UUID], per: int) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    rows: list[tuple[object, ...]] = []
    for n in range(len(ids) * per):
        pid = ids[n % len(ids)]
        rows.append(
            (uuid.uuid4(), pid, CHAIN, f"0x{n:064x}", n % 20, n // 20, f"0x{n:063x}b", now,
             "0x" + "cc" * 20, f"0x{n % len(ids):040x}", token, Decimal(1000), Decimal("0.001"),
             12, "confirmed", False, now, now)
        )  # fmt: skip
    return rows


def event_rows(ids: list[uuid.UUID], count: int) -> list[tuple[object, ...]]:
    now = datetime.now(UTC)
    data = (
        '{"tx_hash": "0x%064x", "log_index": 3, "block_number": 123, "value": "1000",'
        ' "amount": "0.001", "late": false}'
    )
    return [
        (ids[n % len(ids)], "transfer_detected", None, None, data % n, now) for n in range(count)
    ]


def update_rows(ids: list[uuid.UUID], ranges: int) -> list[list[tuple[object, ...]]]:
    """As the scanner updates a range's payments (each of them, in every range)."""
    return [[(i, Decimal(n + 1)) for i in ids] for n in range(ranges)]


async def main(args: argparse.Namespace) -> None:
    db = await fresh_database("postgresql", workdir(), args.pg_url)
    formats: dict[str, tuple[float, float]] | None = None
    try:
        conn = await asyncpg.connect(pg_dsn(db))
        try:
            token, ids = await seed(conn, args.payments)
            credits = args.payments * args.transfers
            events = credits + 2 * args.payments  # detected each; pending→confirming→confirmed
            rows = FloorRows(
                TX_COLUMNS,
                transaction_rows(token, ids, args.transfers),
                EVENT_COLUMNS,
                event_rows(ids, events),
                ("id", "amount_received"),
                update_rows(ids, args.ranges),
            )
            floor = await pg_write(conn, rows)
            if args.copy_formats:
                formats = await copy_formats(conn, rows)
        finally:
            await conn.close()
    finally:
        await db.close()
    print(f"\nThe database alone, {credits:,} credited transfers (PostgreSQL):\n")
    print_floor(floor, credits)
    if formats is not None:
        print(f"\nThe {credits:,} transactions rows stored again, the table emptied first:\n")
        for label, (seconds, cpu) in formats.items():
            print(f"  {label:<40} {seconds:5.2f} s, this process's CPU {cpu:5.2f} s")
    print("\ntarget (for comparison, never pass/fail): >= 50,000 credited/s")


async def copy_formats(conn: asyncpg.Connection, rows: FloorRows) -> dict[str, tuple[float, float]]:
    """The ``transactions`` rows stored by binary ``COPY`` and by text ``COPY``, each into the
    emptied table after a checkpoint: label -> (seconds, this process's CPU seconds)."""
    columns = list(rows.tx_columns)

    async def binary() -> None:
        await conn.copy_records_to_table("transactions", records=rows.transactions, columns=columns)

    async def text() -> None:
        body = io.BytesIO(text_copy(rows.transactions))
        await conn.copy_to_table("transactions", source=body, columns=columns, format="text")

    out: dict[str, tuple[float, float]] = {}
    for label, store in (
        ("binary COPY (asyncpg encodes)", binary),
        ("text COPY (lines made by Python)", text),
    ):
        await conn.execute("TRUNCATE transactions")
        await conn.execute("CHECKPOINT")
        started, cpu = time.perf_counter(), time.process_time()
        await store()
        out[label] = (time.perf_counter() - started, time.process_time() - cpu)
    return out


def text_copy(rows: Sequence[Sequence[object]]) -> bytes:
    """``rows`` in ``COPY``'s text format: NULL as ``\\N``, booleans ``t``/``f``, every other
    value its ``str`` (a time's is ISO 8601), escaped; each distinct value formatted once."""
    made: dict[object, str] = {}

    def field(value: object) -> str:
        if value is None:
            return "\\N"
        if type(value) is bool:
            return "t" if value else "f"
        key = (type(value), value)
        text = made.get(key)
        if text is None:
            text = made[key] = str(value).translate(_ESCAPES)
        return text

    return "".join("\t".join(map(field, row)) + "\n" for row in rows).encode()


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
