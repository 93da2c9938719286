"""``scanner status`` and ``scanner check``: what an operator reaches for, as real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from scanner.db import migrate
from scanner.testkit.settings import settings_from
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.ops.support import run_cli, scanner_env, write_config

pytestmark = pytest.mark.slow
ALICE, BOB, CAROL = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20
COLUMNS = [
    "chain",
    "head",
    "last_scanned_block",
    "lag",
    "open_payments",
    "last_reorg",
    "last_reorg_depth",
    "swept_block",
    "logs_missed",
    "holder",
]


async def test_status_shows_head_cursor_lag_open_payments_and_last_reorg(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    reorged = await h.create_payment(ALICE, "5")
    await h.create_payment(BOB, "7")  # open: nothing paid
    confirmed = await h.create_payment(CAROL, "1")
    pay(h, CAROL, 1_000_000)
    pay(h, ALICE, 5_000_000)
    await h.scan()
    h.chain.reorg(1)  # the block paying ALICE is replaced: a reorg orphans its transfer
    h.mine(3)
    await h.scan()
    assert await h.status(reorged) == "pending" and await h.status(confirmed) == "confirmed"
    cursor = h.chain.head()
    h.mine(4)  # the node moves on; the scanner has not seen it yet
    config = write_config(tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)])
    env = scanner_env(db_url)
    table, as_json = await asyncio.gather(
        asyncio.to_thread(run_cli, ["status", "--config", str(config)], env),
        asyncio.to_thread(run_cli, ["status", "--json", "--config", str(config)], env),
    )
    assert table.returncode == 0 and as_json.returncode == 0, (table.stderr, as_json.stderr)

    (row,) = json.loads(as_json.stdout)
    assert row["chain"] == "anvil"
    assert (row["head"], row["last_scanned_block"], row["lag"]) == (cursor + 4, cursor, 4)
    assert row["open_payments"] == 2
    assert row["last_reorg"] is not None and row["last_reorg"][:4].isdigit()
    assert row["last_reorg_depth"] == 1
    assert row["holder"] is None  # no instance runs (the holder is tested in test_instances)
    assert (row["swept_block"], row["logs_missed"]) == (-1, 0)  # no sweep ran (test_sweep)

    header, line = table.stdout.strip().splitlines()
    assert header.split() == COLUMNS
    cells = line.split()
    assert cells == [
        "anvil",
        str(cursor + 4),
        str(cursor),
        "4",
        "2",
        row["last_reorg"],
        "1",
        "-1",
        "0",
        "-",
    ]


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_check_passes_when_all_is_well_and_names_each_problem(
    h: Harness, db_url: str, other_db_url: str, tmp_path: Path
) -> None:
    tokens = [("USDT", h.token, 6)]
    good = write_config(tmp_path / "good.toml", h.chain.url, tokens)
    unreachable = write_config(tmp_path / "unreachable.toml", "http://127.0.0.1:1", tokens)
    wrong_chain = write_config(tmp_path / "wrong.toml", h.chain.url, tokens, chain_id=1)
    wrong_decimals = write_config(tmp_path / "decimals.toml", h.chain.url, [("USDT", h.token, 18)])
    nowhere = [("USDX", "0x" + "de" * 20, 6)]
    no_contract = write_config(tmp_path / "nocode.toml", h.chain.url, nowhere)
    migrate.stamp(settings_from(other_db_url), "base")  # a database behind the code
    head = migrate.head_revision()

    def check(config: Path, url: str) -> Any:
        return run_cli(["check", "--config", str(config)], scanner_env(url), timeout=90)

    ok, no_rpc, wrong, behind, decimals, nocode = await asyncio.gather(
        asyncio.to_thread(check, good, db_url),
        asyncio.to_thread(check, unreachable, db_url),
        asyncio.to_thread(check, wrong_chain, db_url),
        asyncio.to_thread(check, good, other_db_url),
        asyncio.to_thread(check, wrong_decimals, db_url),
        asyncio.to_thread(check, no_contract, db_url),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "check: ok"
    assert f"(schema {head})" in ok.stdout and "(chain id 31337, head" in ok.stdout

    def problems(result: Any) -> list[str]:
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.strip().splitlines()[-1].startswith("check: 1 problem")
        return [line for line in result.stdout.splitlines() if line.startswith("problem:")]

    (p,) = problems(no_rpc)
    assert "anvil" in p and "http://127.0.0.1:1" in p
    (p,) = problems(wrong)
    assert "chain id 31337" in p and "config says 1" in p
    (p,) = problems(behind)
    assert "the schema is missing: run `scanner migrate upgrade`" in p
    (p,) = problems(decimals)
    assert "says 18 decimals" in p and "decimals() says 6" in p and h.token.lower() in p
    (p,) = problems(nocode)  # decimals() of an address without code answers "0x"
    assert p == f"problem: anvil: token {'0x' + 'de' * 20}: no contract at the address"


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_libpqs_sslmode_is_taken_and_a_server_without_tls_is_one_line(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    """``?sslmode=`` as managed PostgreSQL hands it out: ``disable`` works, ``require`` against
    this server (which offers no TLS) is one line naming the cure, never a traceback; in
    production a URL without ``sslmode`` requires TLS."""
    config = write_config(tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)])
    commands = [["migrate", "current"], ["status", "--config", str(config)]]
    commands.append(["check", "--config", str(config)])

    def run(args: list[str], url: str, env: str = "testing") -> Any:
        return run_cli(args, {**scanner_env(url), "ENV": env, "DATABASE_URL": url})

    runs = [(args, f"{db_url}?sslmode=require", "testing") for args in commands]
    runs.append((commands[1], db_url, "production"))
    for args in commands[:2]:
        plain = await asyncio.to_thread(run, args, f"{db_url}?sslmode=disable")
        assert plain.returncode == 0, plain.stdout + plain.stderr
    for args, url, env in runs:
        refused = await asyncio.to_thread(run, args, url, env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr
        said = (refused.stdout + refused.stderr).strip().splitlines()
        line = next(text for text in said if "rejected SSL upgrade" in text)
        assert "sslmode=disable accepts a plaintext connection" in line, said
