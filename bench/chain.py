"""The benchmarks' chain: a bulk chain of a given :class:`Shape`, cached between runs.

:func:`open_chain` serves a bulk chain of ``blocks`` x ``per_block`` Transfer logs, cycling over
``recipients``. The first run builds it with ``--dump-state`` into the cache directory (keyed by
the shape); later runs start anvil with ``--load-state`` in a second or two.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.config import ChainSettings
from scanner.devchain import FAST_BULK_ARGS, Anvil, DevChain, build_bulk_chain
from scanner.testkit.settings import CHAIN_ID, SCENARIO, chain_settings

CHAIN = "bench"
SYMBOL = "BUSD"
DEFAULT_CACHE = Path(os.environ.get("CTRIP_BENCH_CACHE", "/tmp/ctrip-bench-cache"))
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Shape:
    """A bulk chain: ``blocks`` blocks of ``per_block`` Transfer logs each, to ``recipients``."""

    blocks: int
    per_block: int
    recipients: int
    amount: int = 1_000  # base units per transfer
    decimals: int = 6

    @property
    def logs(self) -> int:
        return self.blocks * self.per_block

    @property
    def key(self) -> str:
        return (
            f"v{FORMAT_VERSION}-b{self.blocks}-t{self.per_block}-r{self.recipients}"
            f"-a{self.amount}-d{self.decimals}"
        )


def recipient_addresses(count: int) -> list[str]:
    """``count`` deterministic, distinct, lower-case addresses."""
    return [
        "0x" + hashlib.sha256(f"ctrip-bench-recipient-{i}".encode()).hexdigest()[:40]
        for i in range(count)
    ]


@dataclass
class BenchChain:
    """A running anvil serving a bulk chain; the bulk logs are in ``first_block..head``."""

    anvil: Anvil
    shape: Shape
    token: str
    first_block: int
    head: int
    built: bool  # built in this run (else loaded from the cache)
    ready_seconds: float

    @property
    def url(self) -> str:
        return self.anvil.url

    def block_timestamp(self, number: int) -> int:
        return int(self.anvil.rpc("eth_getBlockByNumber", [hex(number), False])["timestamp"], 16)

    def recipient_of_log(self, n: int) -> int:
        """Index (in :func:`recipient_addresses`) of the recipient of the n-th bulk log."""
        return n % self.shape.recipients

    def close(self) -> None:
        self.anvil.stop()


def _paths(cache_dir: Path, shape: Shape) -> tuple[Path, Path]:
    return cache_dir / f"{shape.key}.state.json", cache_dir / f"{shape.key}.meta.json"


def open_chain(
    shape: Shape, cache_dir: Path = DEFAULT_CACHE, *, rebuild: bool = False
) -> BenchChain:
    """Start anvil on the cached chain of ``shape``, building (and caching) it first if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    state, meta_path = _paths(cache_dir, shape)
    built = False
    if rebuild or not (state.is_file() and meta_path.is_file()):
        _build(shape, state, meta_path)
        built = True
    meta = json.loads(meta_path.read_text())
    started = time.perf_counter()
    node = Anvil.start(
        chain_id=CHAIN_ID, load_state=str(state), extra_args=FAST_BULK_ARGS, ready_timeout=180
    )
    ready = time.perf_counter() - started
    head = int(node.rpc("eth_blockNumber"), 16)
    if head != meta["head"]:
        node.stop()
        raise RuntimeError(
            f"cached chain {state} answers head {head}, expected {meta['head']}: "
            "rerun with --rebuild"
        )
    return BenchChain(
        anvil=node,
        shape=shape,
        token=meta["token"],
        first_block=meta["first_block"],
        head=head,
        built=built,
        ready_seconds=ready,
    )


def _build(shape: Shape, state: Path, meta_path: Path) -> None:
    print(f"building bulk chain {shape.key} (once; cached in {state.parent}) ...", flush=True)
    started = time.perf_counter()
    partial = state.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    node = Anvil.start(chain_id=CHAIN_ID, dump_state=str(partial), extra_args=FAST_BULK_ARGS)
    try:
        chain = DevChain(node)
        token = chain.deploy_token("Bench USD", SYMBOL, shape.decimals)
        before = chain.head()
        build_bulk_chain(
            chain,
            token,
            shape.blocks,
            shape.per_block,
            recipient_addresses(shape.recipients),
            amount=shape.amount,
        )
        head = chain.head()
        chain.close()
    finally:
        node.stop(timeout=600)  # SIGTERM: anvil writes --dump-state on the way out
    first_block = before + 2  # build_bulk_chain mines one minting block first
    if head != first_block + shape.blocks - 1:
        raise RuntimeError(
            f"bulk build ended at head {head}, expected {first_block + shape.blocks - 1}"
        )
    if not partial.is_file() or partial.stat().st_size == 0:
        raise RuntimeError(f"anvil wrote no state to {partial}")
    os.replace(partial, state)
    meta = {"token": token, "first_block": first_block, "head": head, "shape": shape.key}
    meta_path.write_text(json.dumps(meta, indent=2))
    size_mb = state.stat().st_size / 1e6
    print(f"built in {time.perf_counter() - started:.1f} s ({size_mb:.0f} MB state)", flush=True)


def bench_chain_settings(chain: BenchChain, **overrides: Any) -> ChainSettings:
    """The scanner's settings for the bench chain: the product's defaults (an override of None
    keeps the default), 12 confirmations, from the first bulk block."""
    product_defaults = dict.fromkeys(SCENARIO)  # None: the product's, not a test scenario's
    return chain_settings(
        chain.url,
        [(SYMBOL, chain.token, chain.shape.decimals)],
        **product_defaults
        | {"name": CHAIN, "confirmations": 12, "start_block": chain.first_block}
        | overrides,
    )
