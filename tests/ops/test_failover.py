"""The database fails over: a primary and a streaming standby on loopback behind one address;
the standby falls behind while payments are credited and confirmed on the primary (commits it
never gets), the primary dies (``-m immediate``), the standby is promoted and the address moves
to it. ``scanner run`` goes on against the promoted standby: every payment ends as a clean scan
of the chain says, every payment's ``confirmed`` reaches the webhook endpoint, and no event key
ever names two different events (ids may: the promoted standby hands out again ids whose events
it never got).

Real processes: two PostgreSQL clusters, anvil, ``scanner run``, an HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from scanner.config import Settings
from scanner.db import migrate
from scanner.db.engine import make_engine
from scanner.testkit.postgres import pg_execute
from scanner.testkit.settings import settings_from
from tests.conftest import BACKENDS
from tests.deliver.support import SECRET, Receiver
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.ops.support import json_lines, scanner_env, scanner_process, write_config
from tests.support import replica
from tests.support.wait import until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="needs PostgreSQL"),
    pytest.mark.skipif(not replica.available(), reason="needs PostgreSQL's server binaries"),
]
AMOUNT = 1_000_000  # 1 USDT each
RESUME_WITHIN = 10.0  # seconds from the moved address to a range committed again


@pytest.fixture
def pair() -> Iterator[replica.ReplicatedPair]:
    with replica.replicated_pair() as pair:
        yield pair


@pytest.fixture
def db_url(pair: replica.ReplicatedPair) -> str:
    """The scanner's database on the replicated pair, through the address that follows the
    primary (what the scanner and the gateway are configured with)."""
    asyncio.run(pg_execute(pair.primary.admin_url, 'CREATE DATABASE "scanner"'))
    url = pair.url("scanner")
    migrate.upgrade(settings_from(url))
    replica.wait_replayed(pair)
    return url


def _fact(body: dict[str, Any]) -> str:
    keep = ("payment_id", "type", "status_from", "status_to", "data")
    return json.dumps({k: body[k] for k in keep}, sort_keys=True)


def _confirmed(receiver: Receiver) -> set[str]:
    return {
        r.json["payment_id"]
        for r in receiver.requests
        if r.json["type"] == "status_changed" and r.json["status_to"] == "confirmed"
    }


async def test_a_failover_to_a_lagging_standby_loses_no_payment_and_reuses_no_event_key(
    h: Harness, pair: replica.ReplicatedPair, db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    addresses = ["0x" + f"{n + 1:02x}" * 20 for n in range(20)]
    ids = {a: await h.create_payment(a, "1") for a in addresses}
    await h.close()
    config = write_config(
        tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)], poll_interval=0.1
    )
    config.write_text(
        config.read_text() + f'[[webhooks]]\nurl = "{receiver.url()}"\nsecret_env = "HOOK_SECRET"\n'
        "timeout = 2.0\nretry_base = 0.05\nretry_max = 0.5\n"
    )
    env = scanner_env(db_url, HOOK_SECRET=SECRET)
    with scanner_process(["run", "--config", str(config)], env) as proc:
        await _settle(h, receiver, [ids[a] for a in _paid(h, addresses[:10])])
        replica.wait_replayed(pair)
        pair.replication.cut()  # the standby falls behind from here on
        await _settle(h, receiver, [ids[a] for a in _paid(h, addresses[10:15])])
        on_primary = await _keys(pair.primary.port)
        pair.primary.stop("immediate")
        pair.standby.promote()
        lost = set(on_primary.values()) - set((await _keys(pair.standby.port)).values())
        before = (_scanned(proc.err()), len(receiver.requests))
        pair.address.point(pair.standby.port)
        moved = time.time()
        await _settle(h, receiver, [ids[a] for a in _paid(h, addresses[15:])], within=90)
        proc.send_signal(signal.SIGTERM)
        code, _ = proc.exit_within(20)
        log = proc.err()
    assert code == 0, log[-3000:]
    assert not [e for e in json_lines(log) if e.get("level") == "critical"]
    assert len(lost) >= 10, "the standby had the newest commits: nothing was lost"
    await _every_payment_as_the_chain_says(h, set(ids.values()))
    _no_key_names_two_events(receiver)
    # the facts the standby never got were written again, under the keys they had
    assert lost <= {r.json["event_key"] for r in receiver.requests[before[1] :]}  # delivered again
    after = await _keys(pair.standby.port)
    assert lost <= set(after.values())
    _in_event_order_per_payment(receiver, after)
    reused = {i for i, key in after.items() if i in on_primary and on_primary[i] != key}
    scanning_again = _resumed(log, before[0], moved)
    assert scanning_again < RESUME_WITHIN
    print(
        f"scanning again {scanning_again:.2f} s after the address moved; {len(lost)} events"
        f" lost and delivered again under their keys; {len(reused)} event ids handed out"
        " again for other events"
    )


def _scanned(log: str) -> int:
    return len(_ranges(log))


def _ranges(log: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(log) if e.get("event") == "range_scanned"]


def _resumed(log: str, scanned: int, moved: float) -> float:
    """Seconds from ``moved`` (unix time) to the first range committed after the first
    ``scanned`` ones (by the log's own time stamps)."""
    first = _ranges(log)[scanned]
    return datetime.fromisoformat(first["timestamp"]).timestamp() - moved


def _paid(h: Harness, addresses: list[str]) -> list[str]:
    for address in addresses:
        pay(h, address, AMOUNT)
    h.mine(4)  # 3 confirmations
    return addresses


async def _settle(h: Harness, receiver: Receiver, payments: list[str], within: float = 60) -> None:
    """Until each payment's ``confirmed`` has reached the endpoint (mining as it waits, so a
    scanner that fell back below the head has blocks to go on with)."""

    async def delivered() -> bool:
        h.mine(1)
        return set(payments) <= _confirmed(receiver)

    await until(delivered, within, "every payment's confirmed delivered")


async def _keys(port: int) -> dict[int, str]:
    """Every event's key by id, read from one server directly."""
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/scanner")
    try:
        rows = await conn.fetch("SELECT id, event_key FROM payment_events")
    finally:
        await conn.close()
    return {int(r["id"]): str(r["event_key"]) for r in rows}


async def _every_payment_as_the_chain_says(h: Harness, payments: set[str]) -> None:
    """What a clean scan of the chain gives: each payment paid once, in full, confirmed."""
    await h.engine.dispose()  # its connections went to the dead primary
    async with h.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT CAST(p.id AS TEXT), p.status, p.amount_received,"
                    " count(t.id) FILTER (WHERE t.status <> 'orphaned'), sum(t.value)"
                    " FILTER (WHERE t.status <> 'orphaned')"
                    " FROM payments p LEFT JOIN transactions t ON t.payment_id = p.id"
                    " GROUP BY p.id, p.status, p.amount_received"
                )
            )
        ).all()
    got = {r[0]: (r[1], str(r[2]), int(r[3]), int(r[4] or 0)) for r in rows}
    assert set(got) == payments
    wrong = {
        pid: row for pid, row in got.items() if row[0] != "confirmed" or row[2:] != (1, AMOUNT)
    }
    assert not wrong, wrong
    assert {row[1].rstrip("0").rstrip(".") for row in got.values()} == {"1"}


def _no_key_names_two_events(receiver: Receiver) -> None:
    facts: dict[str, set[str]] = defaultdict(set)
    for request in receiver.requests:
        body = request.json
        assert request.headers["X-Scanner-Event-Key"] == body["event_key"]
        facts[body["event_key"]].add(_fact(body))
    assert all(len(seen) == 1 for seen in facts.values()), {
        k: v for k, v in facts.items() if len(v) > 1
    }


def _in_event_order_per_payment(receiver: Receiver, stored: dict[int, str]) -> None:
    """Each payment's events first arrived in the order the database holds them."""
    place = {key: i for i, key in stored.items()}
    arrived: dict[str, list[int]] = defaultdict(list)
    for request in receiver.requests:
        body = request.json
        order = place[body["event_key"]]
        if order not in arrived[body["payment_id"]]:
            arrived[body["payment_id"]].append(order)
    assert all(seq == sorted(seq) for seq in arrived.values()), arrived


@pytest.fixture
def multi_host(pair: replica.ReplicatedPair) -> Settings:
    """Settings on a URL that names every host, the standby first, taken as ``DATABASE_URL``
    is, and migrated through (as ``scanner migrate`` does)."""
    asyncio.run(pg_execute(pair.primary.admin_url, 'CREATE DATABASE "multi"'))
    replica.wait_replayed(pair)  # the standby, asked first, must have it to say it is one
    hosts = f"host=127.0.0.1:{pair.standby.port}&host=127.0.0.1:{pair.primary.port}"
    settings = settings_from(
        f"postgresql://postgres@/multi?{hosts}&target_session_attrs=read-write"
    )
    migrate.upgrade(settings)
    return settings


async def test_a_multi_host_url_with_target_session_attrs_reaches_the_primary(
    pair: replica.ReplicatedPair, multi_host: Settings
) -> None:
    """The other way to follow the primary: every host in the URL, with libpq's
    ``target_session_attrs=read-write``."""
    engine = make_engine(multi_host)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_is_in_recovery()"))).scalar() is False
            port = (await conn.execute(text("SELECT current_setting('port')"))).scalar_one()
            assert (await conn.execute(text("SELECT count(*) FROM payment_events"))).scalar() == 0
    finally:
        await engine.dispose()
    assert int(port) == pair.primary.port
