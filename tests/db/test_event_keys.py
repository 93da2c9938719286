"""Event keys: every outbox event is named for good by its payment, its place among the
payment's events and its content, so that a database that lost its newest commits (a failover
to a lagging standby) can hand an id out again without a key ever naming two events."""

from __future__ import annotations

import json
import uuid

from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from scanner.config import Settings
from scanner.core.events import event_key
from scanner.db import migrate
from tests.deliver.support import add_events, add_payment, changed, detected


async def _keys(engine: AsyncEngine) -> list[tuple[int, str, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, CAST(payment_id AS TEXT), type, event_key"
                " FROM payment_events ORDER BY id"
            )
        )
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def test_a_key_names_one_fact_at_one_place() -> None:
    pid = str(uuid.uuid4())
    fact = ("status_changed", "pending", "confirming", {"amount_received": 5})
    key = event_key(pid, 3, *fact)
    assert key == event_key(pid, 3, *fact)  # the same fact, the same place: the same key
    assert uuid.UUID(key).version == 5
    assert key != event_key(pid, 4, *fact)  # the same fact again, later: another event
    assert key != event_key(str(uuid.uuid4()), 3, *fact)
    assert key != event_key(
        pid, 3, "status_changed", "pending", "confirming", {"amount_received": 6}
    )
    assert key != event_key(
        pid, 3, "status_changed", "confirming", "pending", {"amount_received": 5}
    )


def test_a_key_is_the_uuid5_of_its_fact_as_keys_always_were() -> None:
    """Keys stay what they were (a receiver deduplicates by them across versions): the uuid5,
    in the scanner's namespace, of the fact as sorted compact JSON."""
    pid = "0b7e6c1a-95c4-4d0e-8f57-2f0f3a1d9c42"
    data = {"tx_hash": "0x" + "ab" * 32, "log_index": 3, "value": 10**30, "late": False}
    key = event_key(pid, 7, "transfer_detected", None, None, data)
    assert key == "394ba975-3bad-564e-b894-0c01f2e522ca"
    space = uuid.UUID("5d1f3c2e-8a47-4b6e-9f0d-2c7a41e9b853")
    for n in range(2_000):  # every variant nibble, non-ASCII content too
        fact = {"note": f"caf\u00e9 {n}", "n": n}
        name = json.dumps(
            [pid, n, "invalid_payment", None, None, fact],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        assert event_key(pid, n, "invalid_payment", None, None, fact) == str(
            uuid.uuid5(space, name)
        )


_SCALARS = (
    st.text()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=True)
    | st.decimals(allow_nan=False, places=3)
)


@settings(max_examples=400, deadline=None)
@given(
    payment=st.text() | st.uuids().map(str),
    ordinal=st.integers(min_value=0, max_value=2**40),
    kind=st.text() | st.sampled_from(["transfer_detected", "status_changed"]),
    moves=st.tuples(st.none() | st.text(), st.none() | st.text()),
    data=st.dictionaries(st.text(), _SCALARS | st.lists(_SCALARS, max_size=2), max_size=6),
)
@example(payment="p", ordinal=0, kind="k", moves=(None, None), data={"a\x7f": 1})
@example(payment="p", ordinal=0, kind="k", moves=(None, None), data={"v": 2**64, "w": "\u2028"})
@example(payment="p", ordinal=0, kind="k", moves=(None, None), data={"f": 1e16, "n": float("nan")})
@example(payment="p", ordinal=1, kind="k", moves=("a", "b"), data={"b": "x", "a": 'q"\\'})
def test_a_key_is_made_of_exactly_the_text_json_makes_of_its_fact(
    payment: str,
    ordinal: int,
    kind: str,
    moves: tuple[str | None, str | None],
    data: dict[str, object],
) -> None:
    """Keys are made quickly where they can be, never of another text: any payment, place,
    type and data (escapes, non-ASCII, big ints, floats, nested values) give the uuid5 of
    what ``json.dumps`` makes of the fact."""
    fact = [payment, ordinal, kind, *moves, data]
    name = json.dumps(fact, sort_keys=True, separators=(",", ":"), default=str)
    space = uuid.UUID("5d1f3c2e-8a47-4b6e-9f0d-2c7a41e9b853")
    assert event_key(payment, ordinal, kind, *moves, data) == str(uuid.uuid5(space, name))


async def test_every_event_gets_a_unique_key_from_its_place_in_its_payment(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    a, b = await add_payment(engine), await add_payment(engine)
    await add_events(session_factory, detected(a), changed(a, "pending", "confirming"), detected(b))
    # the same transition again (a reorg sent it back and forth): another event, another key
    await add_events(session_factory, changed(a, "pending", "confirming"))
    rows = await _keys(engine)
    assert len({key for *_, key in rows}) == 4
    places = [key for _, pid, _, key in rows if pid == str(a)]
    assert len(places) == 3 and places[1] != places[2]


async def test_facts_written_again_after_their_rows_were_lost_carry_the_keys_they_had(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    """What a failover does: the newest commits are gone, ids are handed out again; the scan
    writes the lost facts again under their keys, and a different fact under another key."""
    pid = await add_payment(engine)
    await add_events(session_factory, detected(pid, log_index=1))
    await add_events(session_factory, changed(pid, "pending", "confirming"))
    await add_events(session_factory, changed(pid, "confirming", "confirmed"))
    before = await _keys(engine)
    async with engine.begin() as conn:  # the standby never got the last two commits
        await conn.execute(text("DELETE FROM payment_events WHERE id > :id"), {"id": before[0][0]})
    await add_events(session_factory, changed(pid, "pending", "confirming"))  # the same fact
    await add_events(session_factory, changed(pid, "confirming", "pending", received=0))  # another
    after = await _keys(engine)
    assert after[1][3] == before[1][3]
    assert after[2][3] not in {key for *_, key in before}


async def test_events_written_before_keys_get_a_key_of_their_own_form(
    settings: Settings, engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    pid = await add_payment(engine)
    await add_events(session_factory, detected(pid), changed(pid, "pending", "confirming"))
    await engine.dispose()
    before = migrate.script_directory().get_revision("c4e8a2f6b1d9").down_revision
    migrate.downgrade(settings, str(before))  # the schema before event keys
    migrate.upgrade(settings)
    rows = await _keys(engine)
    assert [key for *_, key in rows] == [f"00000000-0000-0000-0000-{i:012x}" for i, *_ in rows]
    await add_events(session_factory, changed(pid, "confirming", "confirmed"))
    assert uuid.UUID((await _keys(engine))[-1][3]).version == 5
