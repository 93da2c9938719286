"""The reference consumer of docs/gateway.md (``docs/examples/consumer.py``, the file the page
shows) against a real scan: it gets every event once in id order, keeps its position, handles
nothing twice when read again, wakes on NOTIFY on PostgreSQL, and after the database went back
(the row at its position carries another key) reads again without handling a key twice."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import text

from scanner.db.engine import async_url
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.support.wait import until

ALICE = "0x" + "a7" * 20
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "consumer.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reference_consumer", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_reference_consumer_handles_each_event_of_a_real_scan_once(
    h: Harness, db_url: str, db_backend: str
) -> None:
    handled: list[tuple[str, str | None, str | None, dict[str, Any]]] = []

    async def handle(conn: Any, event: dict[str, Any]) -> None:
        handled.append((event["type"], event["status_from"], event["status_to"], event["data"]))

    url = async_url(db_url).render_as_string(hide_password=False)
    consumer = _example().Consumer(url, handle)
    try:
        await consumer.setup()
        payment = await h.create_payment(ALICE, "25.5")
        pay(h, ALICE, 25_500_000)
        await h.scan()
        assert await consumer.run_once() == 2
        (detected, confirming) = handled
        assert detected[0] == "transfer_detected"
        assert (detected[3]["value"], detected[3]["amount"]) == ("25500000", "25.500000")
        assert confirming[:3] == ("status_changed", "pending", "confirming")
        assert confirming[3]["amount_received"] == "25500000"
        assert confirming[3]["amount_received_decimal"] == "25.500000"

        h.mine(3)
        await h.scan()
        assert await h.status(payment) == "confirmed"
        assert await consumer.run_once() == 1 and handled[-1][2] == "confirmed"
        assert await consumer.run_once() == 0  # nothing new

        async with h.engine.begin() as conn:  # read everything again: no key handled twice
            await conn.execute(text("UPDATE gateway_consumer SET last_id = 0, last_key = NULL"))
        assert await consumer.run_once() == 0 and len(handled) == 3

        async with h.engine.begin() as conn:  # the row at the position now names another fact
            await conn.execute(text("UPDATE gateway_consumer SET last_key = :k"), {"k": "gone"})
        assert await consumer.run_once() == 0 and len(handled) == 3

        if db_backend == "postgresql":  # NOTIFY wakes it long before its poll would
            consumer.poll_seconds = 60.0
            stop = asyncio.Event()
            running = asyncio.create_task(consumer.run(stop))
            await asyncio.sleep(0.5)
            late = await h.create_payment("0x" + "b8" * 20, "1")
            pay(h, "0x" + "b8" * 20, 1_000_000)
            await h.scan()
            await until(lambda: len(handled) == 5, 5, "five events handled", 0.05)
            stop.set()
            await asyncio.wait_for(running, 65)
            assert [e[0] for e in handled[3:]] == ["transfer_detected", "status_changed"]
            assert await h.status(late) == "confirming"
    finally:
        await consumer.aclose()
