"""The two PostgreSQL roles of *Database roles* in docs/operations.md, made by
``config/postgres-roles.sql`` on a database that grants nothing to PUBLIC: the migration role
migrates it (and owns the tables), the runtime role scans with row privileges alone and cannot
change the schema."""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scanner.db.engine import engine_for_url
from scanner.testkit.gateway import NewPayment, insert_payments
from scanner.testkit.postgres import PG_ADMIN_URL, pg_execute
from scanner.testkit.settings import CHAIN
from tests.conftest import BACKENDS
from tests.e2e.actions import pay
from tests.e2e.harness import Harness
from tests.ops.support import json_lines, run_cli, scanner_env, scanner_process
from tests.ops.support import write_config as support_config
from tests.support.wait import until, until_sync

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.skipif("postgresql" not in BACKENDS, reason="roles are PostgreSQL's"),
]
SCRIPT = Path(__file__).resolve().parents[2] / "config" / "postgres-roles.sql"
ALICE = "0x" + "a1" * 20


async def apply_script(names: dict[str, str], database_url: str) -> None:
    """``psql -v NAME=VALUE -f config/postgres-roles.sql`` as the administrator: each
    ``:"NAME"`` becomes the quoted identifier; ``\\connect`` moves to the scanner's database."""
    url, statements = PG_ADMIN_URL, list[str]()
    for line in SCRIPT.read_text(encoding="utf-8").splitlines():
        line = re.sub(r':"(\w+)"', lambda m: '"' + names[m.group(1)] + '"', line)
        line = line.split("--", 1)[0].strip()
        if line.startswith("\\connect"):
            await pg_execute(url, *_split(statements))
            url, statements = database_url, []
        elif line:
            statements.append(line)
    await pg_execute(url, *_split(statements))


def _split(lines: list[str]) -> list[str]:
    return [s.strip() for s in " ".join(lines).split(";") if s.strip()]


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


async def test_scanner_runs_under_the_runtime_role_with_the_documented_grants_alone(
    h: Harness, empty_db_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {"migrator": f"scanner_migrator_{tag}", "runtime": f"scanner_runtime_{tag}"}
    names["db"] = str(make_url(empty_db_url).database)
    await pg_execute(
        empty_db_url,
        f'REVOKE ALL ON DATABASE "{names["db"]}" FROM PUBLIC',
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
    )
    admin = engine_for_url(empty_db_url)
    try:
        await apply_script(names, empty_db_url)
        migrator, runtime = (
            as_role(empty_db_url, names["migrator"]),
            as_role(empty_db_url, names["runtime"]),
        )
        up = await asyncio.to_thread(run_cli, ["migrate", "upgrade"], scanner_env(migrator))
        assert up.returncode == 0, up.stderr
        await scan_and_confirm(h, admin, runtime, tmp_path)
        down = await asyncio.to_thread(
            run_cli, ["migrate", "downgrade", "-1"], scanner_env(runtime)
        )
        assert down.returncode == 1 and "must be owner" in down.stderr, down.stderr
    finally:
        await admin.dispose()
        for role in ("runtime", "migrator"):  # one at a time: their default privileges link them
            await pg_execute(empty_db_url, f'DROP OWNED BY "{names[role]}"')
        await pg_execute(
            PG_ADMIN_URL,
            f'DROP ROLE IF EXISTS "{names["runtime"]}"',
            f'DROP ROLE IF EXISTS "{names["migrator"]}"',
        )


async def scan_and_confirm(h: Harness, admin: AsyncEngine, runtime: str, tmp_path: Path) -> None:
    """``scanner run`` as the runtime role: a payment the gateway writes is confirmed, and the
    process stops cleanly (its instance row and leases handed over)."""
    config = support_config(tmp_path / "scanner.toml", h.chain.url, [("USDT", h.token, 6)])
    env = scanner_env(runtime, SCANNER_MIGRATE_ON_START="false")
    with scanner_process(["run", "--config", str(config)], env) as proc:

        def prepared() -> bool:
            return any(e.get("event") == "chain_prepared" for e in json_lines(proc.err()))

        until_sync(prepared, 30, what="the chain starts")
        payment = str(uuid.uuid4())
        async with admin.begin() as conn:
            token = (await conn.execute(text("SELECT id FROM tokens"))).scalar_one()
            now = h.now()
            await insert_payments(
                conn, [NewPayment(payment, token, CHAIN, ALICE, "5", now + 3600, now)]
            )
        pay(h, ALICE, 5_000_000)
        h.mine(3)

        async def confirmed() -> bool:
            return await _status(admin, payment) == "confirmed"

        await until(confirmed, 30, "the payment confirmed", 0.2, detail=lambda: proc.err()[-2000:])
        proc.send_signal(signal.SIGTERM)
        code, _ = proc.exit_within(20)
        assert code == 0, proc.err()[-2000:]
        errors = [e for e in json_lines(proc.err()) if e.get("level") in ("error", "critical")]
        assert not errors, errors


async def _status(admin: AsyncEngine, payment: str) -> str:
    async with admin.connect() as conn:
        found = await conn.execute(
            text("SELECT status FROM payments WHERE id = :id"), {"id": uuid.UUID(payment)}
        )
        return str(found.scalar_one())
