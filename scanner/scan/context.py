"""What a chain's scan needs to know about the chain, resolved once at start."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from scanner.config import ChainSettings
from scanner.core import finality
from scanner.core.kinds import EVM, ChainKind
from scanner.core.plan import ChainRules
from scanner.db.locks import chain_xact_lock

#: Checked in every writing transaction of a live scan: raises ChainLockLost when this process
#: no longer holds the chain (:mod:`scanner.scan.leases`, :mod:`scanner.scan.writer`).
Fence = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: UUID
    address: str
    symbol: str
    decimals: int
    key: object = None  # the id as stored (None: ``id``), what a credit's token_id binds
    #: other rows of the same contract (their addresses differ in letter case only): their
    #: payments are followed as this contract's, each credited under its own row
    aliases: tuple[TokenInfo, ...] = ()


def by_address(tokens: Iterable[TokenInfo]) -> tuple[dict[str, TokenInfo], list[TokenInfo]]:
    """The tokens by contract address (lower-case hex, as the chain compares them), and the
    rows that name a contract an earlier row (by id) names already: those become the first
    row's aliases, never dropped."""
    out: dict[str, TokenInfo] = {}
    duplicates: list[TokenInfo] = []
    for token in sorted(tokens, key=lambda t: str(t.id)):
        first = out.get(token.address)
        if first is None:
            out[token.address] = token
        else:
            out[token.address] = replace(first, aliases=(*first.aliases, token))
            duplicates.append(token)
    return out, duplicates


@dataclass(frozen=True, slots=True)
class ChainContext:
    """A chain's rules and its enabled tokens (by contract address and by id)."""

    rules: ChainRules
    native_decimals: int
    tokens: Mapping[str, TokenInfo]
    catch_up_max_blocks: int = 100_000  # how far below the cursor a look-back may start
    kind: ChainKind = EVM  # what the chain's kind changes (addresses, native coin, limits)
    sweeps: bool = False  # final ranges are read again: an expiry waits for that read
    fence: Fence | None = field(default=None, compare=False, repr=False)
    idle_seconds: float | None = None  # set before the chain's lock: see chain_xact_lock
    # by id, built once: callers look tokens up per row
    _by_id: dict[UUID, TokenInfo] = field(init=False, repr=False, compare=False)
    # payments rows parsed under this context, by their columns as stored (scan/rows.py)
    _parsed: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {a.id: a for t in self.tokens.values() for a in (t, *t.aliases)}
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_parsed", {})

    @classmethod
    def from_settings(cls, chain: ChainSettings, tokens: Mapping[str, TokenInfo]) -> ChainContext:
        rules = ChainRules(
            name=chain.name,
            required=chain.confirmations,
            tag=chain.finality,
            grace=chain.grace_seconds,
            reorg_depth=chain.reorg_depth,
            verify=bool(chain.verify_urls),
        )
        return cls(
            rules=rules,
            native_decimals=chain.native_decimals,
            tokens=dict(tokens),
            catch_up_max_blocks=chain.catch_up_max_blocks,
            kind=chain.kind_rules,
            sweeps=chain.sweep,
        )

    def deep_end(self, head: int, tag_block: int | None) -> int:
        """The newest block a range may end at and be read without a header per block
        (:func:`~scanner.core.finality.deep_end`)."""
        tag_mode = self.tag is not None
        return finality.deep_end(head, self.reorg_depth, tag_mode=tag_mode, tag_block=tag_block)

    @property
    def name(self) -> str:
        return self.rules.name

    @property
    def required(self) -> int | None:
        return self.rules.required

    @property
    def tag(self) -> str | None:
        return self.rules.tag

    @property
    def grace(self) -> int:
        return self.rules.grace

    @property
    def reorg_depth(self) -> int:
        return self.rules.reorg_depth

    @property
    def token_addresses(self) -> list[str]:
        return sorted(self.tokens)

    def token_by_id(self) -> dict[UUID, TokenInfo]:
        """The enabled tokens by id, aliases too (one shared dict, built at construction: do
        not mutate)."""
        return self._by_id

    def parsed_rows(self) -> dict[Any, Any]:
        """The payments rows parsed under this context's tokens, kept by
        :func:`scanner.scan.rows.holdings` (the one that reads and writes it)."""
        return self._parsed


async def lock_chain(session: AsyncSession, ctx: ChainContext) -> None:
    """The chain's transaction lock, then the fence (this process still holds the chain)."""
    await chain_xact_lock(session, ctx.name, idle_seconds=ctx.idle_seconds)
    if ctx.fence is not None:
        await ctx.fence(session)
