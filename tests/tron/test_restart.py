"""``scanner run`` on a TRON chain killed with SIGKILL and started again, both databases: each
transfer is credited once, and every payment ends confirmed at the solidified block."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from pathlib import Path

from sqlalchemy import text

from tests.ops.support import scanner_env, scanner_process
from tests.support.wait import until
from tests.tron.conftest import MAINNET_ID, USDT, TronHarness, customer


def config(path: Path, url: str) -> Path:
    path.write_text(
        '[metrics]\nenabled = false\n[logging]\nformat = "json"\n'
        f'[[chains]]\nname = "tron"\nkind = "tron"\nchain_id = {MAINNET_ID}\n'
        f'rpc_urls = ["{url}"]\npoll_interval = 0.2\nbatch_size = 7\nstart_block = 0\n'
        f'[[chains.tokens]]\nsymbol = "USDT"\naddress = "{USDT}"\ndecimals = 6\n',
        encoding="utf-8",
    )
    return path


async def credits(th: TronHarness) -> int:
    async with th.engine.connect() as conn:
        found = await conn.execute(text("SELECT count(*) FROM transactions"))
        return int(found.scalar_one())


async def statuses(th: TronHarness, ids: list[str]) -> list[str]:
    return [await th.status(i) for i in ids]


async def test_a_kill_9_and_a_restart_credit_each_transfer_once(
    th: TronHarness, tmp_path: Path
) -> None:
    assert th.node is not None
    await th.scan()  # the tokens rows; then the process scans from the cursor on
    owners = [customer(n) for n in range(60, 66)]
    ids = [await th.create_payment(b58, "2") for _, b58 in owners]
    for hex20, _ in owners[:3]:
        th.pay(hex20, 2_000_000)
    path = config(tmp_path / "tron.toml", th.node.url)
    env = scanner_env(th.settings.database_url.get_secret_value())
    with scanner_process(["run", "--config", str(path)], env) as first:

        async def credited() -> bool:
            return await credits(th) >= 1

        await until(credited, 30, "a first credit", 0.1, detail=lambda: first.err()[-2000:])
        os.kill(first.proc.pid, signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL
    for hex20, _ in owners[3:]:
        th.pay(hex20, 2_000_000)
    th.mine(20)  # solidified above every transfer
    with scanner_process(["run", "--config", str(path)], env) as second:

        async def confirmed() -> bool:
            return await statuses(th, ids) == ["confirmed"] * len(ids)

        await until(confirmed, 60, "every payment confirmed", 0.1, detail=lambda: statuses(th, ids))
        second.send_signal(signal.SIGTERM)
        assert second.exit_within(20)[0] == 0, second.err()[-2000:]
    assert await statuses(th, ids) == ["confirmed"] * len(ids)
    assert await credits(th) == len(ids)
    for payment in ids:
        assert (await th.payment(payment))["amount_received"] == Decimal("2")
