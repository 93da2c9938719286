"""End to end: a real payment on anvil, ``scanner run`` with a webhook, a real receiver; the
scanner is killed (SIGKILL) while a delivery is in flight, started again, and every event of
the payment arrives, signed, in order."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from aiohttp import web

from tests.deliver.support import SECRET, Received, Receiver, event_ids
from tests.e2e.harness import Harness
from tests.ops.support import json_lines, scanner_env, scanner_process, write_config
from tests.support.wait import until

pytestmark = pytest.mark.slow


async def test_kill_9_during_a_delivery_loses_no_event(
    h: Harness,
    db_url: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    hold = asyncio.Event()
    answered: list[Received] = []

    async def answer(got: Received) -> web.StreamResponse:
        if len(receiver.requests) == 1:
            await hold.wait()  # the first delivery stays in flight until the scanner is dead
            return web.Response(status=200)  # to nobody: it does not count as answered
        answered.append(got)
        return web.Response(status=200)

    receiver.answer = answer
    address = "0x" + "5a" * 20
    payment = await h.create_payment(address, "25.5")
    webhooks = (
        f'[[webhooks]]\nurl = "{receiver.url()}"\nsecret_env = "HOOK_SECRET"\n'
        "timeout = 1.0\nretry_base = 0.05\nretry_max = 0.5\n"
    )
    config = write_config(
        tmp_path / "scanner.toml",
        h.chain.url,
        [("USDT", h.token, 6), ("DAI", h.token18, 18)],
        extra_top="",
    )
    config.write_text(config.read_text() + webhooks)
    env = scanner_env(db_url, HOOK_SECRET=SECRET)
    # paid before the scanner starts: its outbox cursor is set before the first scan
    h.chain.wait_receipt(h.chain.transfer(h.token, h.customer, address, 25_500_000))
    with scanner_process(["run", "--config", str(config)], env) as first:
        await until(lambda: receiver.requests, 20, "the first delivery")
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    hold.set()
    h.mine(4)  # confirmations: the rest of the payment's events are written after the restart
    with scanner_process(["run", "--config", str(config)], env) as second:

        async def complete() -> bool:
            wanted = set(await event_ids(h.engine))
            return len(wanted) >= 3 and wanted <= {r.json["id"] for r in answered}

        await until(complete, 40, "every event delivered")
        second.send_signal(signal.SIGTERM)
        code, _ = second.exit_within(15)
        err = second.err()
    assert code == 0, err[-3000:]
    assert all(r.verified() for r in receiver.requests)
    bodies = [r.json for r in answered]
    assert {b["payment_id"] for b in bodies} == {payment}
    by_id = {b["id"]: b for b in bodies}
    firsts = list(dict.fromkeys(b["id"] for b in bodies))  # ids in order of first arrival
    assert firsts == sorted(firsts)
    assert [(by_id[i]["type"], by_id[i]["status_to"]) for i in firsts] == [
        ("transfer_detected", None),
        ("status_changed", "confirming"),
        ("status_changed", "confirmed"),
    ]
    resent = [b["id"] for b in bodies]
    assert len(resent) - len(set(resent)) <= 1  # at most the one in flight twice
    delivered = [e for e in json_lines(err) if e.get("event") == "webhook_delivered"]
    assert delivered and SECRET not in err
