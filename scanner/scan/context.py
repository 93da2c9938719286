"""What a chain's scan needs to know about the chain, resolved once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from scanner.config import ChainSettings
from scanner.core.model import Finality


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: UUID
    address: str
    symbol: str
    decimals: int


@dataclass(frozen=True, slots=True)
class ChainContext:
    """A chain's rules and its enabled tokens (by contract address and by id)."""

    name: str
    required: int | None  # confirmations; None in tag mode
    tag: str | None  # "finalized" / "safe"; None in block mode
    grace: int
    reorg_depth: int
    native_decimals: int
    tokens: Mapping[str, TokenInfo]
    # by id, built once: callers look tokens up per row
    _by_id: dict[UUID, TokenInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {t.id: t for t in self.tokens.values()})

    @classmethod
    def from_settings(cls, chain: ChainSettings, tokens: Mapping[str, TokenInfo]) -> ChainContext:
        return cls(
            name=chain.name,
            required=chain.confirmations,
            tag=chain.finality,
            grace=chain.grace_seconds,
            reorg_depth=chain.reorg_depth,
            native_decimals=chain.native_decimals,
            tokens=dict(tokens),
        )

    @property
    def token_addresses(self) -> list[str]:
        return sorted(self.tokens)

    def token_by_id(self) -> dict[UUID, TokenInfo]:
        """The enabled tokens by id (one shared dict, built at construction: do not mutate)."""
        return self._by_id

    def decimals_of(self, token_id: UUID | None) -> int:
        if token_id is None:
            return self.native_decimals
        token = self._by_id.get(token_id)
        if token is None:
            raise KeyError(token_id)
        return token.decimals

    def final_block(self, checked: int, tag_block: int | None) -> int:
        """The highest final block when ``checked`` is the newest hash-checked block."""
        if self.required is not None:
            return checked - self.required + 1
        return min(tag_block if tag_block is not None else -1, checked)

    def finality(
        self, checked: int, tag_block: int | None, timestamps: Mapping[int, int]
    ) -> Finality:
        final = self.final_block(checked, tag_block)
        return Finality(
            checked=checked,
            final_block=final,
            final_timestamp=timestamps.get(final),
            required=self.required,
        )
