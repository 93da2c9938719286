"""The steps of the customers and the gateway: transfers of every kind, blocks, reorgs, and the
payments' life (created, edited, cancelled, reopened)."""

from __future__ import annotations

from tests.sim.chain import BLOCK_SECONDS
from tests.sim.gateway import Known
from tests.sim.schedule import Schedule, step
from tests.sim.world import CONFIRMATIONS, MAX_REORG_DEPTH

LIFE_BLOCKS = (3, 30)  # a payment's life, in blocks of chain time
NOISE_ADDRESS = "0x" + "5e" * 20


def pay(s: Schedule, known: Known, value: int) -> None:
    sender = s.customer()
    if known.asset.address is None:
        s.world.chain.send_eth(sender, known.address, value, gas=100_000)
    else:
        s.world.chain.transfer(known.asset.address, sender, known.address, value)
    known.paid += value
    s.note(f"pay {value} {known.asset.symbol} to {known.id[:8]} (amount {known.amount})")


def owed(known: Known) -> int:
    return max(1, known.amount - known.paid)


@step("pay_partial")
async def pay_partial(s: Schedule) -> bool:
    if (known := s.pick()) is None:
        return False
    pay(s, known, max(1, known.amount * s.rng.randrange(1, 90) // 100))
    s.mine()
    return True


@step("pay_exact")
async def pay_exact(s: Schedule) -> bool:
    if (known := s.pick()) is None:
        return False
    pay(s, known, owed(known))
    s.mine()
    return True


@step("pay_over")
async def pay_over(s: Schedule) -> bool:
    if (known := s.pick()) is None:
        return False
    pay(s, known, owed(known) + s.rng.randrange(1, known.amount + 2))
    s.mine()
    return True


@step("pay_late")
async def pay_late(s: Schedule) -> bool:
    """Pay a payment whose expiry has passed on the chain (late, or counting after a reopen)."""
    late = [k for k in s.world.gateway.known.values() if k.expires_at < s.world.chain.timestamp]
    if not late:
        return False
    known = s.rng.choice(late)
    pay(s, known, owed(known))
    s.mine()
    return True


@step("pay_batch")
async def pay_batch(s: Schedule) -> bool:
    """One transaction paying several payments of one token (an exchange's payout)."""
    token = s.rng.choice(list(s.world.tokens.values()))
    known = [k for k in s.world.gateway.known.values() if k.asset.address == token]
    if len(known) < 2:
        return False
    chosen = s.rng.sample(known, min(len(known), s.rng.randrange(2, 5)))
    values = [owed(k) for k in chosen]
    s.world.chain.batch(token, s.customer(), [k.address for k in chosen], values)
    for k, v in zip(chosen, values, strict=True):
        k.paid += v
    s.note(f"batch paying {[k.id[:8] for k in chosen]}")
    s.mine()
    return True


@step("pay_native")
async def pay_native(s: Schedule) -> bool:
    if (known := s.pick(token=False)) is None:
        return False
    pay(s, known, owed(known))
    s.mine()
    return True


@step("pay_failed")
async def pay_failed(s: Schedule) -> bool:
    """A token transfer that reverts (from an account without the token): no log, no credit."""
    if (known := s.pick(token=True)) is None or known.asset.address is None:
        return False
    s.world.chain.failing_transfer(known.asset.address, s.world.poor, known.address, owed(known))
    s.note(f"failed transfer to {known.id[:8]}")
    s.mine()
    return True


@step("pay_noise")
async def pay_noise(s: Schedule) -> bool:
    """Funds to an address no payment uses."""
    token = s.rng.choice(list(s.world.tokens.values()))
    s.world.chain.transfer(token, s.customer(), NOISE_ADDRESS, 1000)
    s.mine()
    return True


@step("mine")
async def mine(s: Schedule) -> bool:
    s.mine(s.rng.choice((1, 1, 2, 3, 5, 8)))
    return True


@step("reorg_shallow")
async def reorg_shallow(s: Schedule) -> bool:
    return reorg(s, s.rng.randrange(1, CONFIRMATIONS))


@step("reorg_deep")
async def reorg_deep(s: Schedule) -> bool:
    return reorg(s, s.rng.randrange(CONFIRMATIONS, MAX_REORG_DEPTH + 1))


def reorg(s: Schedule, depth: int) -> bool:
    if s.world.chain.head() - depth not in s.world.chain.snapshots:
        s.mine(depth)
    done = s.world.chain.reorg(depth, s.rng)
    s.note(f"reorg {done.first}..{done.last} (depth {done.depth})")
    return True


# -- the gateway ----------------------------------------------------------------------------


def life(s: Schedule) -> int:
    return BLOCK_SECONDS * s.rng.randrange(*LIFE_BLOCKS) + BLOCK_SECONDS // 2


@step("create")
async def create(s: Schedule) -> bool:
    for _ in range(s.rng.randrange(1, 4)):
        known = await s.world.gateway.create(s.rng, s.world.chain.timestamp, life(s))
        s.note(f"create {known.id[:8]} {known.amount} {known.asset.symbol} at {known.address}")
    return True


@step("edit_amount")
async def edit_amount(s: Schedule) -> bool:
    if (known := s.pick()) is None:
        return False
    amount = max(1, known.amount * s.rng.randrange(30, 200) // 100)
    done = await s.world.gateway.edit_amount(known, amount)
    s.note(f"edit amount of {known.id[:8]} to {amount}: {done}")
    return done


@step("edit_expiry")
async def edit_expiry(s: Schedule) -> bool:
    if (known := s.pick()) is None:
        return False
    expires = known.expires_at + BLOCK_SECONDS * s.rng.randrange(-5, 20)
    done = await s.world.gateway.edit_expiry(known, expires)
    s.note(f"edit expiry of {known.id[:8]} to {expires}: {done}")
    return done


@step("cancel")
async def cancel(s: Schedule) -> bool:
    if (known := s.pick()) is None:
        return False
    done = await s.world.gateway.cancel(known)
    s.note(f"cancel {known.id[:8]}: {done}")
    return done


@step("reopen")
async def reopen(s: Schedule) -> bool:
    statuses = await s.world.gateway.statuses()
    expired = [k for k in s.world.gateway.known.values() if statuses.get(k.id) == "expired"]
    if not expired:
        return False
    known = s.rng.choice(expired)
    done = await s.world.gateway.reopen(known, s.world.chain.timestamp + life(s))
    s.note(f"reopen {known.id[:8]}: {done}")
    return done
