"""The steps that disrupt: the node unreachable, lagging, stale, rate-limiting or answering
wrongly (through the fault proxy), ``scanner run`` killed with SIGKILL and started again, a
second instance, backfills and dry runs beside the live scan."""

from __future__ import annotations

import asyncio

from tests.sim.schedule import Schedule, step
from tests.sim.steps import reorg
from tests.sim.world import MAX_REORG_DEPTH

LONG_OUTAGE_BLOCKS = 1000
GETBLOCK = "eth_getBlockByNumber"


async def outage(s: Schedule, blocks: int) -> None:
    """The node unreachable while ``blocks`` are mined, a reorg inside now and then."""
    proxy = s.world.proxy.proxy
    rule = proxy.fail_http("*", 503) if s.rng.random() < 0.5 else proxy.drop("*")
    s.note(f"outage of {blocks} blocks ({rule.kind})")
    await asyncio.sleep(s.rng.choice((0.1, 0.5, 1.0)))
    if s.rng.random() < 0.5:
        reorg(s, s.rng.randrange(1, MAX_REORG_DEPTH + 1))
    s.mine(blocks)
    if s.rng.random() < 0.3:
        reorg(s, s.rng.randrange(1, MAX_REORG_DEPTH + 1))
    await asyncio.sleep(s.rng.choice((0.1, 0.5)))
    rule.times = 0


@step("outage")
async def short_outage(s: Schedule) -> bool:
    await outage(s, s.rng.randrange(0, MAX_REORG_DEPTH + 1))
    return True


@step("outage_long")
async def long_outage(s: Schedule) -> bool:
    await outage(s, s.rng.randrange(MAX_REORG_DEPTH, LONG_OUTAGE_BLOCKS + 1))
    return True


@step("lag")
async def lag(s: Schedule) -> bool:
    proxy = s.world.proxy.proxy
    blocks, every_other = s.rng.randrange(1, 8), s.rng.random() < 0.5
    proxy.lag(blocks, every_other=every_other)
    s.note(f"lag {blocks} (every other request: {every_other})")
    s.later(s.rng.randrange(1, 6), lambda: proxy.lag(0))
    return True


@step("stale_head")
async def stale_head(s: Schedule) -> bool:
    proxy = s.world.proxy.proxy
    if proxy.frozen_at is not None:
        return False
    at = s.world.proxy.call(proxy.freeze())
    s.note(f"head frozen at {at}")
    s.later(s.rng.randrange(1, 5), proxy.thaw)
    return True


@step("null_header")
async def null_header(s: Schedule) -> bool:
    times = s.rng.randrange(1, 4)
    s.world.proxy.proxy.null_result(GETBLOCK, times=times)
    s.note(f"{times} null headers")
    return True


@step("rate_limit")
async def rate_limit(s: Schedule) -> bool:
    times, after = s.rng.randrange(1, 6), s.rng.choice(("0", "1", None))
    s.world.proxy.proxy.rate_limit("*", retry_after=after, times=times)
    s.note(f"{times} answers 429 (Retry-After {after})")
    return True


@step("empty_logs")
async def empty_logs(s: Schedule) -> bool:
    times = s.rng.randrange(1, 3)
    # left out of one read only: the sweep's second read of a final block must see it (what
    # a node leaves out of every read, no scanner can credit)
    s.world.proxy.proxy.leave_out_logs(times=times)
    s.note(f"{times} eth_getLogs answered [] (each block once)")
    return True


@step("malformed_body")
async def malformed_body(s: Schedule) -> bool:
    proxy = s.world.proxy.proxy
    times = s.rng.randrange(1, 3)
    if s.rng.random() < 0.5:
        proxy.malformed("*", times=times)
    else:
        proxy.truncate("*", times=times)
    s.note(f"{times} bodies malformed")
    return True


@step("malformed_shape")
async def malformed_shape(s: Schedule) -> bool:
    proxy = s.world.proxy.proxy
    method, shape = s.rng.choice(
        (
            ("eth_getLogs", [None]),
            ("eth_getLogs", "logs"),
            (GETBLOCK, []),
            (GETBLOCK, {"number": "0x1"}),
            ("eth_getTransactionReceipt", ["0x1"]),
            ("eth_blockNumber", {"head": 1}),
        )
    )
    proxy.answer(method, shape, times=1)
    s.note(f"{method} answered {shape!r}")
    return True


# -- the processes ---------------------------------------------------------------------------


@step("kill9")
async def kill9(s: Schedule) -> bool:
    fleet = s.world.fleet
    runners = fleet.runners()
    if not runners:
        return False
    victim = s.rng.choice(runners)
    fleet.kill9(victim)
    s.note(f"kill -9 {victim.log.name}")
    if fleet.runners() and s.rng.random() < 0.5:
        return True  # the other instance takes over
    s.mine(s.rng.randrange(0, 4))
    if s.rng.random() < 0.3:
        reorg(s, s.rng.randrange(1, MAX_REORG_DEPTH + 1))
    fleet.run()
    return True


@step("scanner_down")
async def scanner_down(s: Schedule) -> bool:
    """Every ``scanner run`` killed and left down for a few steps, while transfers, reorgs and
    backfills go on (a backfill then reads above the live cursor with no live scan, and the
    scan, started again, reads again behind the head what the backfills credited)."""
    fleet = s.world.fleet
    runners = fleet.runners()
    if not runners:
        return False
    for proc in runners:
        fleet.kill9(proc)
    s.note(f"scanner down ({len(runners)} killed)")

    def up() -> None:
        if not fleet.runners():
            fleet.run()
            s.note("scanner up")

    s.later(s.rng.randrange(3, 16), up)
    return True


@step("second_instance")
async def second_instance(s: Schedule) -> bool:
    """A second ``scanner run`` beside the one running (none: the scan is down, or has not
    begun, on purpose)."""
    if len(s.world.fleet.runners()) != 1:
        return False
    s.world.fleet.run()
    s.note("second instance")
    return True


def backfill(s: Schedule, end: int, *, dry_run: bool) -> bool:
    fleet = s.world.fleet
    if fleet.backfills() or s.world.proxy.proxy.frozen_at is not None:
        return False
    start = max(1, end - s.rng.randrange(4, 80))
    if end < start:
        return False
    fleet.backfill(start, end, dry_run=dry_run)
    s.note(f"backfill {start}..{end}{' (dry run)' if dry_run else ''}")
    return True


@step("backfill")
async def backfill_final(s: Schedule) -> bool:
    return backfill(s, s.world.chain.head() - MAX_REORG_DEPTH - 8, dry_run=False)


@step("backfill_window")
async def backfill_window(s: Schedule) -> bool:
    return backfill(s, s.world.chain.head() - s.rng.randrange(0, MAX_REORG_DEPTH), dry_run=False)


@step("dry_run")
async def dry_run(s: Schedule) -> bool:
    return backfill(s, s.world.chain.head() - s.rng.randrange(0, 40), dry_run=True)
