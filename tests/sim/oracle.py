"""The oracle: what each payment must be, from the final canonical chain and the gateway's final
rows alone. Written for the test from the design's rules, importing nothing of ``scanner``.

It is exact only for the payments the simulation's gateway makes (see ``tests/sim``):

- every payment has an address of its own for the whole run, so matching rules 1-4 reduce to
  "every transfer of the payment's token (or native coin) to its address is the payment's";
- every such transfer is mined after the payment's ``created_at`` (the address is new), so the
  grace window never excludes one;
- the chain never rewrites a block the scanner may count as final (see ``tests.sim.chain``), and
  the gateway edits only open payments (a ``confirmed`` one is final whatever the edit), so the
  final state does not depend on the path: a ``confirmed`` or ``expired`` decision taken on the
  way is the one the final chain gives.

The rules, per payment (times are the blocks' timestamps):

- a transfer counts when its block's timestamp is at or before ``expires_at``; later ones are
  recorded ``late`` and count for nothing; ``amount_received`` is the sum of those that count;
- a gateway status (``cancelled``) is kept as it is;
- otherwise: received ≥ amount → ``confirmed`` once every counted transfer is final (at least
  ``confirmations`` deep below the head the scanner has reached), else ``confirming``;
  received < amount → ``expired`` once the first block after ``expires_at`` is final and the
  scanner's sweep has read every block before it a second time (a log a node left out of the
  first read may still pay it), else ``pending``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from tests.sim.chain import ChainTransfer

SCANNER_STATUSES = frozenset({"pending", "confirming", "confirmed", "expired"})


@dataclass(frozen=True)
class GatewayRow:
    """What the gateway last wrote of a payment (its own columns), read back at the end."""

    id: str
    token: str | None  # a token contract, None for the native coin
    decimals: int
    address: str
    amount: Decimal
    created_at: int  # unix seconds
    expires_at: int
    status: str  # as stored: only a status outside SCANNER_STATUSES is the gateway's


@dataclass(frozen=True)
class Expected:
    status: str
    amount_received: Decimal
    credits: frozenset[tuple[str, int]]  # (tx_hash, log_index) of every transfer to it
    late: frozenset[tuple[str, int]]  # the ones after expires_at


@dataclass(frozen=True)
class FinalChain:
    head: int
    confirmations: int
    timestamps: Mapping[int, int]  # block number -> timestamp
    transfers: tuple[ChainTransfer, ...]
    swept: int | None = None  # the sweep's newest block read twice (None: no sweep)

    def final(self, block: int) -> bool:
        return self.head - block + 1 >= self.confirmations

    def first_block_after(self, moment: int) -> int | None:
        after = [n for n, ts in self.timestamps.items() if ts > moment]
        return min(after) if after else None


def expect(row: GatewayRow, chain: FinalChain) -> Expected:
    """What ``row`` must be on ``chain`` (see the module docstring)."""
    mine = [t for t in chain.transfers if t.to == row.address and t.token == row.token]
    counted = [t for t in mine if chain.timestamps[t.block_number] <= row.expires_at]
    late = [t for t in mine if chain.timestamps[t.block_number] > row.expires_at]
    received = Decimal(sum(t.value for t in counted)).scaleb(-row.decimals)
    return Expected(
        status=_status(row, chain, counted, received),
        amount_received=received,
        credits=frozenset((t.tx_hash, t.log_index) for t in mine),
        late=frozenset((t.tx_hash, t.log_index) for t in late),
    )


def _status(
    row: GatewayRow, chain: FinalChain, counted: Iterable[ChainTransfer], received: Decimal
) -> str:
    if row.status not in SCANNER_STATUSES:
        return row.status
    if received >= row.amount:
        return "confirmed" if all(chain.final(t.block_number) for t in counted) else "confirming"
    after = chain.first_block_after(row.expires_at)
    if after is None or not chain.final(after):
        return "pending"
    return "expired" if chain.swept is None or after <= chain.swept + 1 else "pending"
