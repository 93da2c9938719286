"""The tick's questions about ``payments`` are answered through indexes, never by reading the
book: the statements the code issues (built by scanner/db/payments.py, not retyped here) are
EXPLAINed on both databases, over a book of open payments, and no plan scans ``payments``."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from scanner.config import ChainSettings
from scanner.db import payments, transactions
from scanner.db.sql import locked
from scanner.testkit.gateway import NewPayment, db_id, db_time, insert_payments

CHAIN = "ethereum"
TOKEN = "5f0e3c1a-9b7d-4c2e-8a61-3d4b5c6e7f80"
BOOK = 3_000
START = 1_767_225_600  # 2026-01-01: created_at of the book
YEAR = 365 * 86_400


class Explain(Executable, ClauseElement):
    """``EXPLAIN`` (PostgreSQL) or ``EXPLAIN QUERY PLAN`` (SQLite) of a built statement, with
    its bind parameters bound as the code binds them."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


def _explained(prefix: str, element: Explain, compiler: Any, **kw: Any) -> str:
    sql = str(compiler.process(element.statement, **kw))
    compiler._result_columns.clear()  # the rows are the plan's, not the statement's columns
    return f"{prefix} {sql}"


@compiles(Explain, "postgresql")
def _explain_pg(element: Explain, compiler: Any, **kw: Any) -> str:
    return _explained("EXPLAIN", element, compiler, **kw)


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: Any, **kw: Any) -> str:
    return _explained("EXPLAIN QUERY PLAN", element, compiler, **kw)


async def plan(
    session: AsyncSession, statement: Any, backend: str, *, prefer_index: bool = True
) -> str:
    """The plan as text, one line per node (PostgreSQL told to avoid sequential scans where
    any index can serve, as a large table would make it, unless not ``prefer_index``)."""
    if backend == "postgresql":
        if prefer_index:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
        result = await session.execute(Explain(statement))
        return "\n".join(str(row[0]) for row in result.all())
    result = await session.execute(Explain(statement))
    return "\n".join(str(row[-1]) for row in result.all())


def assert_served(plan_text: str, index: str, backend: str) -> None:
    """``index`` is used and ``payments`` is never scanned whole (a table or an index)."""
    assert index in plan_text, plan_text
    if backend == "postgresql":
        assert not re.search(r"Seq Scan on payments", plan_text), plan_text
        lines = plan_text.splitlines()
        for n, line in enumerate(lines):  # an index read whole would have no Index Cond
            if re.search(r"Scan (using|on) (ix_payments\w*|pk_payments)", line):
                assert "Index Cond" in lines[n + 1], plan_text
    else:
        assert not re.search(r"\bSCAN (payments|older)\b", plan_text), plan_text


@pytest.fixture(params=["analyzed", "as the database keeps it"])
async def book(
    session_factory: async_sessionmaker[AsyncSession],
    request: pytest.FixtureRequest,
    db_backend: str,
) -> None:
    """A book of open token payments (one a tenth native, some paid, some expired); with its
    statistics gathered, and as the database keeps it by itself: SQLite never gathers
    statistics (nobody runs ANALYZE on a gateway's SQLite), PostgreSQL's autovacuum does."""
    statuses = ("pending", "pending", "pending", "confirming", "confirmed", "expired")
    rows = [
        NewPayment(
            uuid.uuid4(),
            None if n % 10 == 0 else TOKEN,
            CHAIN,
            f"0x{n:040x}",
            "10",
            START + YEAR + n,
            START + n,
            seen_at_block=None if n % 100 == 0 else 1,
        )
        for n in range(BOOK)
    ]
    async with session_factory() as session:
        await session.execute(text(INSERT_TOKEN))
        await insert_payments(await session.connection(), rows)
        await session.execute(text(INSERT_TX), _credits(await session.connection(), rows))
        for n, status in enumerate(statuses):
            await session.execute(
                text("UPDATE payments SET status = :s WHERE address LIKE :a"),
                {"s": status, "a": f"%{n}"},
            )
        await session.commit()
        if request.param == "analyzed" or db_backend == "postgresql":
            await session.execute(text("ANALYZE"))
            await session.commit()


INSERT_TOKEN = (
    "INSERT INTO tokens (id, chain, address, symbol, decimals) VALUES"
    f" ('{TOKEN}', '{CHAIN}', '0x6b175474e89094c44da98b954eedeac495271d0f', 'DAI', 18)"
)
INSERT_TX = (
    "INSERT INTO transactions (id, payment_id, chain, tx_hash, log_index, block_number,"
    " block_hash, block_timestamp, from_address, to_address, token_id, value, amount, status)"
    " VALUES (:id, :pid, :chain, :tx, 0, :n, :hash, :ts, :frm, :to, :token, '1000', '0.001',"
    " :status)"
)


def _credits(conn: Any, rows: list[NewPayment]) -> list[dict[str, Any]]:
    """A credit for every other payment of the book, all final but two (the credits table
    grows with history: the unfinal ones are found through its (chain, status) index)."""
    return [
        {
            "id": db_id(conn, uuid.uuid4()),
            "pid": db_id(conn, row.id),
            "chain": CHAIN,
            "tx": f"0x{n:064x}",
            "n": n,
            "hash": f"0x{n:064x}",
            "ts": db_time(conn, START + n),
            "frm": "0x" + "ab" * 20,
            "to": row.address,
            "token": None if row.token_id is None else db_id(conn, row.token_id),
            "status": "pending" if n in (2, 4) else "confirmed",
        }
        for n, row in enumerate(rows)
        if n % 2 == 0
    ]


def at(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


@pytest.mark.usefixtures("book")
@pytest.mark.parametrize("lock", [False, True])
async def test_candidates_by_address_are_index_lookups(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str, lock: bool
) -> None:
    addresses = [f"0x{n:040x}" for n in (7, 70, 700)]
    window = (at(START + 50), at(START + 80))
    async with session_factory() as session, session.begin():
        stmt = payments.address_statement(session, CHAIN, addresses, window)
        text_ = await plan(session, locked(stmt, lock), db_backend)
        assert_served(text_, "ix_payments_lookup", db_backend)
        found = await payments.by_address(session, CHAIN, addresses, lock=lock, window=window)
    assert sorted(r.address for r in found) == [a for a in addresses if not a.endswith(("4", "5"))]


@pytest.mark.usefixtures("book")
@pytest.mark.parametrize("lock", [False, True])
async def test_payments_the_checked_block_moves_are_index_lookups(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str, lock: bool
) -> None:
    cutoff = at(START + YEAR + 25)  # the newest final block expires 25 of the book
    async with session_factory() as session, session.begin():
        unfinal, expiring = payments.advancing_statements(CHAIN, cutoff)
        primary_key = "pk_payments" if db_backend == "postgresql" else "autoindex_payments"
        text_ = await plan(session, locked(unfinal, lock), db_backend)
        assert_served(text_, primary_key, db_backend)
        assert "ix_transactions_chain_status" in text_, text_
        text_ = await plan(session, locked(expiring, lock), db_backend)
        assert_served(text_, "ix_payments_expiring", db_backend)
        rows = await payments.to_advance(session, CHAIN, cutoff, lock=lock)
    # the pending ones of the 25 (addresses ending in 3, 4, 5 are not) once looked at (payment
    # 0 is unseen: it waits for its look-back), and the two holding an unfinal credit (payment
    # 4 is confirmed: a fresh overpayment)
    assert sorted(r.address for r in rows) == [
        f"0x{n:040x}" for n in range(1, 25) if f"{n:x}"[-1] not in "345" or n == 4
    ]


@pytest.mark.usefixtures("book")
async def test_unseen_edited_and_native_questions_read_their_partial_indexes(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    async with session_factory() as session, session.begin():
        text_ = await plan(session, payments.unseen_statement(CHAIN, 100), db_backend)
        assert_served(text_, "ix_payments_unseen", db_backend)
        edited = locked(payments.edited_statement(CHAIN, 100), True)
        assert_served(await plan(session, edited, db_backend), "ix_payments_edited", db_backend)
        recipients = [f"0x{n:040x}" for n in (10, 11, 20)]
        any_open, among = payments.native_statements(session, CHAIN, recipients)
        assert_served(await plan(session, any_open, db_backend), "ix_payments_native", db_backend)
        assert_served(await plan(session, among, db_backend), "ix_payments_lookup", db_backend)
        page = await payments.unseen(session, CHAIN, 7)
        changed = await payments.edited(session, CHAIN, limit=BOOK)
        native = await payments.native_among(session, CHAIN, recipients)
        assert await payments.any_native_open(session, CHAIN)
    assert len(page) == 7 and all(r.key is not None for r in page)
    # the rows whose status the fixture changed (addresses ending in 3, 4, 5)
    assert len(changed) == sum(1 for n in range(BOOK) if f"{n:x}"[-1] in "345")
    assert native == {f"0x{n:040x}" for n in (10, 20)}  # 11 is a token payment's address


class Recording:
    """A session that keeps each statement it runs: ``payments.watched_addresses`` builds its
    statement inline, so its plan is the plan of what it ran."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.statements: list[Any] = []

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        self.statements.append(statement)
        return await self.session.execute(statement, *args, **kw)

    def get_bind(self) -> Any:
        return self.session.get_bind()


@pytest.mark.usefixtures("book")
async def test_watched_addresses_stop_after_the_limit_in_the_lookup_index(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """More addresses than ``filter_recipients_max``: None, read in the index's order up to
    the first address past the limit (no sort or hash of the chain's every payment)."""
    limit = ChainSettings.model_fields["filter_recipients_max"].default
    assert limit < BOOK
    async with session_factory() as session, session.begin():
        recording = Recording(session)
        assert await payments.watched_addresses(recording, CHAIN, limit) is None  # type: ignore[arg-type]
        text_ = await plan(session, recording.statements[-1], db_backend)
        assert_served(text_, "ix_payments_lookup", db_backend)
        assert not re.search(r"Sort|HashAggregate|TEMP B-TREE", text_), text_
        everyone = await payments.watched_addresses(session, CHAIN, BOOK)
    assert everyone == {f"0x{n:040x}" for n in range(BOOK)}


async def test_a_page_of_unseen_rows_is_read_by_an_index_scan_that_stops_after_it(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """The look marks the unseen rows seen a page at a time; each page is read with bitmap
    scans off (PostgreSQL, without statistics at 1,000,000 rows, planned one: the whole of
    ``ix_payments_unseen``, the entries of the rows marked before included, every page), then
    the server's setting is back."""
    rows = [
        NewPayment(uuid.uuid4(), TOKEN, CHAIN, f"0x{n:040x}", "10", START + YEAR, START + n)
        for n in range(3_000)
    ]
    async with session_factory() as session:
        await session.execute(text(INSERT_TOKEN))
        await insert_payments(await session.connection(), rows)
        await session.commit()
    async with session_factory() as session, session.begin():
        first = await payments.unseen(session, CHAIN, 1_000)
        await payments.mark_seen(session, [r.key for r in first], 7)
    statement = payments.unseen_statement(CHAIN, 1_000)
    async with session_factory() as session, session.begin():
        async with payments.index_scan_only(session):
            text_ = await plan(session, statement, db_backend, prefer_index=False)
            settings = await _bitmap_scans(session, db_backend)
        assert_served(text_, "ix_payments_unseen", db_backend)
        assert "Bitmap" not in text_, text_
        settings += await _bitmap_scans(session, db_backend)
        second = await payments.unseen(session, CHAIN, 1_000)
        settings += await _bitmap_scans(session, db_backend)
    assert settings == (["off", "on", "on"] if db_backend == "postgresql" else [])
    assert len(first) == len(second) == 1_000
    assert not {r.key for r in first} & {r.key for r in second}


async def _bitmap_scans(session: AsyncSession, backend: str) -> list[str]:
    if backend != "postgresql":
        return []
    return [str((await session.execute(text("SHOW enable_bitmapscan"))).scalar_one())]


async def test_watched_addresses_walk_the_lookup_index_on_a_table_not_analyzed_yet(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """A gateway's fresh rows have no statistics yet: the addresses are still read through
    ``ix_payments_lookup``, one by one, planned as the database plans them (PostgreSQL hashed
    every payment of the chain for a ``SELECT DISTINCT … LIMIT``: a second each sweep at
    1,000,000). Several payments share an address, some written in capitals."""
    rows = [
        NewPayment(uuid.uuid4(), TOKEN, CHAIN, _spelled(n), "10", START + YEAR, START + n)
        for n in range(3_000)
    ]
    async with session_factory() as session:
        await session.execute(text(INSERT_TOKEN))
        await insert_payments(await session.connection(), rows)
        await session.commit()
    lower = {r.address.lower() for r in rows}
    written = {r.address for r in rows}
    assert (len(lower), len(written)) == (1_500, 1_515)
    async with session_factory() as session, session.begin():
        recording = Recording(session)
        assert await payments.watched_addresses(recording, CHAIN, 1_000) is None  # type: ignore[arg-type]
        assert await payments.watched_addresses(recording, CHAIN, 1_500) == lower  # type: ignore[arg-type]
        assert await payments.watched_addresses(recording, CHAIN, 1_499) is None  # type: ignore[arg-type]
        everyone = await payments.watched_addresses(recording, CHAIN, 5_000, as_written=True)  # type: ignore[arg-type]
        assert everyone == written
        too_many = len(written) - 1
        assert await payments.watched_addresses(session, CHAIN, too_many, as_written=True) is None
        for statement in recording.statements:
            text_ = await plan(session, statement, db_backend, prefer_index=False)
            assert "ix_payments_lookup" in text_, text_
            assert not re.search(r"Sort|HashAggregate|TEMP B-TREE", text_), text_
            assert not re.search(r"(Seq|Bitmap Heap) Scan on payments|SCAN payments", text_), text_
        assert len(recording.statements) == 4 + 15  # the walks, then each address in capitals


def _spelled(n: int) -> str:
    """Payment ``n``'s address: 1,500 addresses, two payments each; the second payment of one
    address in a hundred writes it in capitals."""
    written = f"0xab{n % 1_500:038x}"
    return written.upper() if n >= 1_500 and n % 100 == 0 else written


@pytest.mark.usefixtures("book")
async def test_a_payments_final_credits_are_not_read_beside_its_running_totals(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """Credits of whole payments through ``ix_transactions_payment_id``; of the others only
    the not-yet-final ones, through the partial ``ix_transactions_unfinal`` (the book's
    credits are final but those of the payments 2 and 4)."""
    async with session_factory() as session, session.begin():
        keys = {}
        for n in (0, 2, 4, 6):
            found = await payments.by_address(session, CHAIN, [f"0x{n:040x}"], lock=False)
            keys[n] = found[0].key
        stmt = transactions.credits_statement(session, [keys[0]], [keys[2], keys[4], keys[6]])
        text_ = await plan(session, stmt, db_backend)
        assert "ix_transactions_unfinal" in text_ and "ix_transactions_payment_id" in text_, text_
        assert not re.search(r"Seq Scan on transactions|\bSCAN transactions\b", text_), text_
        tokens = {keys[n]: None if n % 10 == 0 else uuid.UUID(TOKEN) for n in keys}
        found_credits, broken = await transactions.credits_of(
            session, tokens, partial=[keys[2], keys[4], keys[6]]
        )
    assert not broken
    assert {n: len(found_credits.get(keys[n], [])) for n in keys} == {0: 1, 2: 1, 4: 1, 6: 0}


async def test_candidates_of_many_addresses_on_a_table_not_analyzed_yet_are_no_join(
    session_factory: async_sessionmaker[AsyncSession], db_backend: str
) -> None:
    """A gateway's fresh rows have no statistics yet: the addresses must be a condition on
    ``payments`` probed through its index, never a join the planner may turn inside out (it
    put the array on the inner side once, comparing every final payment with every address:
    a second a range at 1,000 of each)."""
    rows = [
        NewPayment(uuid.uuid4(), TOKEN, CHAIN, f"0x{n % 500:040x}", "10", START + YEAR, START + n)
        for n in range(1_000)
    ]
    async with session_factory() as session:
        await session.execute(text(INSERT_TOKEN))
        await insert_payments(await session.connection(), rows)
        await session.execute(text("UPDATE payments SET status = 'confirmed'"))  # all final
        await session.commit()
    addresses = [f"0x{n:040x}" for n in range(0, 1_000, 2)]  # 250 with payments, 250 without
    window = (at(START + 2_000), at(START + 3_000))  # after every payment: rule 4's newest
    async with session_factory() as session, session.begin():
        stmt = locked(payments.address_statement(session, CHAIN, addresses, window), True)
        text_ = await plan(session, stmt, db_backend, prefer_index=False)  # as planned, no hint
        if db_backend == "postgresql":
            assert "unnest" not in text_ and "Join Filter" not in text_, text_
        assert "ix_payments_lookup" in text_, text_
        found = await payments.by_address(session, CHAIN, addresses, lock=True, window=window)
    # the newest final payment at each of the 250 addresses (created n and n + 500)
    assert len(found) == 250
    assert {r.address for r in found} == {a for a in addresses if int(a, 16) < 500}
