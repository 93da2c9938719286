"""The one-off commands an operator reaches for: backfill, status, check."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from contextlib import suppress
from typing import Any

import structlog
from sqlalchemy import func, select

from scanner.config import ChainSettings, Settings
from scanner.db import leases
from scanner.db.engine import make_engine, make_session_factory
from scanner.db.migrate import ensure_schema, require_head
from scanner.db.models import ChainState, Payment
from scanner.errors import ConfigError, RpcError, ScannerError
from scanner.scan.backfill import Backfill, BackfillSummary, check_bounds
from scanner.scan.parts import ChainParts
from scanner.scan.split import SplitBackfill
from scanner.secrets import Scrubber, printable, redact_url

log = structlog.get_logger(__name__)


async def backfill(settings: Settings, args: argparse.Namespace) -> int:
    from scanner.chain.reader import ChainReader

    chain = settings.chain(args.chain)
    check_bounds(args.from_block, args.to_block)  # before touching the database or the node
    if args.job_size is not None and (args.job_size < 1 or args.dry_run):
        raise ConfigError("--job-size takes a positive number, without --dry-run", key="--job-size")
    await ensure_schema(settings)
    engine = make_engine(settings)
    reader = ChainReader.from_settings(chain, None)
    try:
        job = Backfill(
            ChainParts(chain, reader, make_session_factory(engine)), dry_run=args.dry_run
        )
        if args.job_size is not None:  # several workers share the jobs: each logs its own
            split = SplitBackfill(job, args.job_size, settings.cluster.lease_seconds)
            summary = await split.run(args.from_block, args.to_block)
        else:
            with _Progress(chain.name, args.from_block, args.to_block) as progress:
                summary = await job.run(args.from_block, args.to_block, progress.update)
    finally:
        await reader.client.aclose()
        await engine.dispose()
    _print_summary(summary)
    return 0


class _Progress:
    """A progress bar on a terminal; a structured event every few seconds elsewhere."""

    def __init__(self, chain: str, start: int, end: int) -> None:
        self.chain, self.start, self.end = chain, start, end
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.began = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} blocks"),
                TextColumn("{task.fields[rate]} blocks/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                f"backfill {self.chain}", total=self.end - self.start + 1, rate="-"
            )
        return self

    def update(self, summary: BackfillSummary, block: int) -> None:
        done = block - self.start + 1
        elapsed = max(time.monotonic() - self.began, 1e-9)
        rate = (block - summary.resumed_from + 1) / elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=f"{rate:,.0f}")
            return
        now = time.monotonic()
        if now - self.last >= 5.0 or block == self.end:
            self.last = now
            remaining = self.end - block
            log.info(
                "backfill_progress",
                chain=self.chain,
                block=block,
                done=done,
                total=self.end - self.start + 1,
                blocks_per_second=round(rate, 1),
                eta_seconds=round(remaining / rate, 1) if rate > 0 else None,
                matched=summary.matched,
            )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_summary(summary: BackfillSummary) -> None:
    fields = {
        "chain": summary.chain,
        "from_block": summary.from_block,
        "to_block": summary.to_block,
        "resumed_from": summary.resumed_from,
        "blocks": summary.blocks,
        "logs": summary.logs,
        "matches": summary.matched,
        "payments_changed": summary.payments_changed,
        "events": summary.events,
        "status_changes": summary.status_changes,
        "seconds": round(summary.seconds, 3),
        "dry_run": summary.dry_run,
    }
    log.info("backfill_finished", **fields)
    print(json.dumps(fields))


async def status(settings: Settings, *, as_json: bool) -> int:
    """Each chain's head, cursor, lag, open payments and last reorg."""
    require_head(settings)  # a missing or other schema: one sentence, nothing created
    engine = make_engine(settings)
    try:
        sessions = make_session_factory(engine)
        async with sessions() as session:
            held = await leases.holders(session)
            rows = [await _chain_status(session, chain) for chain in settings.chains]
        for row in rows:  # who scans it (PostgreSQL leases); null: no live instance
            holder = held.get(row["chain"])
            row["holder"] = holder.as_json() if holder is not None else None
    finally:
        await engine.dispose()
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


async def _chain_status(session: Any, chain: Any) -> dict[str, Any]:
    from scanner.chain.reader import ChainReader

    state = (
        await session.execute(select(ChainState).where(ChainState.chain == chain.name))
    ).scalar_one_or_none()
    open_count = (
        await session.execute(
            select(func.count())
            .select_from(Payment)
            .where(Payment.chain == chain.name, Payment.status.in_(("pending", "confirming")))
        )
    ).scalar_one()
    reader = ChainReader.from_settings(chain, None)
    try:
        head: int | None = await reader.head()
    except ScannerError:
        head = None
    finally:
        await reader.client.aclose()
    cursor = state.last_scanned_block if state else None
    reorg_at = state.last_reorg_at if state else None
    missed_at = state.last_logs_missed_at if state else None
    return {
        "chain": chain.name,
        "kind": chain.kind,
        "head": head,
        "last_scanned_block": cursor,
        "lag": head - cursor if head is not None and cursor is not None else None,
        "open_payments": int(open_count),
        "last_reorg": reorg_at.isoformat() if reorg_at else None,
        "last_reorg_depth": state.last_reorg_depth if state else None,
        "swept_block": state.swept_block if state else None,
        "logs_missed": state.logs_missed if state else 0,
        "last_logs_missed": missed_at.isoformat() if missed_at else None,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    headers = [
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
    table = [headers] + [["-" if r[h] is None else _cell(r[h]) for h in headers] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        print(printable("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))))


def _cell(value: Any) -> str:
    if isinstance(value, dict):  # the holder: host:pid (instance id), until when
        who = f"{value['host']}:{value['pid']} ({value['instance'][:8]})"
        return f"{who} until {value['lease_expires_at']}"
    return str(value)


async def check(settings: Settings) -> int:
    """Validate everything that can be checked without scanning; exit 1 if anything is wrong.
    Every line is escaped (each problem was scrubbed where it was found): what a node or the
    database said is shown, never acted on by the terminal."""
    problems: list[str] = []
    print(
        printable(
            f"config: ok ({settings.config_file or 'no file'}; {len(settings.chains)} chain(s))"
        )
    )
    problems += _check_webhook_secrets(settings)
    database = await _check_database(settings)
    problems += database
    stored = await _stored_tokens(settings) if not database else {}
    for chain in settings.chains:
        problems += await _check_chain(settings, chain, stored.get(chain.name, {}))
    for problem in problems:
        print(f"problem: {printable(problem)}")
    print("check: ok" if not problems else f"check: {len(problems)} problem(s)")
    return 0 if not problems else 1


async def _check_chain(
    settings: Settings, chain: ChainSettings, stored: dict[str, int]
) -> list[str]:
    """Each RPC URL serves the chain; each token's decimals (the tokens table's where it has
    the row, else the configuration's) are its contract's ``decimals()``."""
    from scanner.chain.reader import ChainReader

    problems: list[str] = []
    scrubber = Scrubber(settings.secrets())
    for url in chain.rpc_urls:
        shown = redact_url(url.get_secret_value())
        probe = chain.model_copy(update={"rpc_urls": [url], "rpc_max_attempts": 1})
        reader = ChainReader.from_settings(probe, None)
        try:
            actual = await reader.chain_id()
            head = await reader.head()
            if actual == chain.chain_id:
                problems += await _check_decimals(chain, reader, stored)
        except ScannerError as exc:
            problems.append(f"{chain.name}: {shown}: {scrubber.text(str(exc))}")
            continue
        finally:
            await reader.client.aclose()
        if actual != chain.chain_id:
            problems.append(
                f"{chain.name}: {shown} serves chain id {actual}, config says {chain.chain_id}"
            )
        else:
            print(printable(f"{chain.name}: {shown}: ok (chain id {actual}, head {head})"))
    return problems


async def _has_code(reader: Any, address: str) -> bool:
    """Whether a contract is there; a node that does not answer ``eth_getCode`` is not asked."""
    try:
        return bool(await reader.has_code(address))
    except RpcError as exc:
        if exc.transient:
            raise
        return True


async def _check_decimals(chain: ChainSettings, reader: Any, stored: dict[str, int]) -> list[str]:
    kind = chain.kind_rules  # the node is asked in hex; shown as the chain's users write it
    wanted = {kind.parse_address(t.address): t.decimals for t in chain.tokens} | stored
    problems = []
    for address, decimals in sorted(wanted.items()):
        if not await _has_code(reader, address):
            problems.append(f"{chain.name}: token {kind.show(address)}: no contract at the address")
            continue
        try:
            actual = await reader.token_decimals(address)
        except RpcError as exc:
            if exc.transient:
                raise
            continue  # decimals() is optional in ERC-20
        if actual != decimals:
            where = "the tokens table" if address in stored else "the configuration"
            problems.append(
                f"{chain.name}: token {kind.show(address)}: {where} says {decimals} decimals,"
                f" the contract's decimals() says {actual}"
            )
    return problems


async def _stored_tokens(settings: Settings) -> dict[str, dict[str, int]]:
    """Enabled, readable ``tokens`` rows: chain → address → decimals."""
    from scanner.scan.tokens import parse_token, read_tokens

    engine = make_engine(settings)
    out: dict[str, dict[str, int]] = {}
    try:
        async with make_session_factory(engine)() as session:
            for chain in settings.chains:
                for row in await read_tokens(session, chain.name):
                    with suppress(ValueError):
                        token = parse_token(tuple(row), chain.kind_rules)
                        if token.enabled:
                            out.setdefault(chain.name, {})[token.info.address] = token.info.decimals
    finally:
        await engine.dispose()
    return out


def _check_webhook_secrets(settings: Settings) -> list[str]:
    """Each ``secret_env`` of ``[[webhooks]]`` is set where check runs (as where run runs)."""
    return [
        f"webhooks[{n}].secret_env: environment variable {hook.secret_env} is not set"
        for n, hook in enumerate(settings.webhooks)
        if hook.secret_env is not None and not os.environ.get(hook.secret_env)
    ]


async def _check_database(settings: Settings) -> list[str]:
    """The schema is at this code's head (read without creating or migrating anything)."""
    shown = redact_url(settings.database_url.get_secret_value())
    try:
        rev = await asyncio.to_thread(require_head, settings)
    except ScannerError as exc:
        return [Scrubber(settings.secrets()).text(str(exc))]
    print(printable(f"database {shown}: ok (schema {rev})"))
    return []


async def rewind(settings: Settings, chain_name: str, to_block: int) -> int:
    """Undo every block above ``to_block`` on a chain and set its cursor there."""
    from scanner.chain.reader import ChainReader
    from scanner.scan.operator import rewind_chain

    chain = settings.chain(chain_name)
    if to_block < 0:  # a usage error, before touching the database or the node
        raise ConfigError(f"--to-block {to_block} must not be negative", key="--to-block")
    await ensure_schema(settings)
    engine = make_engine(settings)
    reader = ChainReader.from_settings(chain, None)
    try:
        outcome = await rewind_chain(chain, reader, make_session_factory(engine), to_block)
    finally:
        await reader.client.aclose()
        await engine.dispose()
    print(
        json.dumps(
            {
                "chain": chain.name,
                "old_cursor": outcome.old_cursor,
                "cursor": outcome.ancestor,
                "orphaned": outcome.orphaned,
                "events": len(outcome.report.events),
            }
        )
    )
    return 0
