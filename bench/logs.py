"""Raw logs/s of ``ChainReader.logs`` against web3's ``w3.eth.get_logs`` on a bulk anvil chain.

``python -m bench.logs [blocks] [per_block]``.
Builds ``blocks`` × ``per_block`` Transfer logs, then reads them in 100-block ranges, medians
of 3 runs.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import requests
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from scanner.chain.reader import ChainReader
from scanner.chain.rpc import RpcClient
from scanner.core.decode import TRANSFER_TOPIC
from scanner.devchain import FAST_BULK_ARGS, DevChain, build_bulk_chain

STEP = 100


@contextmanager
def web3_client(chain: DevChain) -> Iterator[Web3]:
    """A synchronous web3.py client of the chain's node, its HTTP session closed on exit."""
    with requests.Session() as session:
        yield Web3(HTTPProvider(chain.url, session=session))


def ranges(first: int, last: int) -> list[tuple[int, int]]:
    return [(s, min(s + STEP - 1, last)) for s in range(first, last + 1, STEP)]


async def median_rate(name: str, run: Callable[[], Awaitable[int]]) -> None:
    rates, count = [], 0
    for _ in range(3):
        started = time.perf_counter()
        count = await run()
        rates.append(count / (time.perf_counter() - started))
    print(f"{name:<48} {count:>7} logs  {statistics.median(rates):>10,.0f} logs/s")


async def bench(chain: DevChain, token: str, first: int, last: int) -> None:
    spans = ranges(first, last)
    async with RpcClient("bench", [chain.url], timeout=60) as client:
        reader = ChainReader(client)

        async def raw_sequential() -> int:
            return sum([len(await reader.logs([token], TRANSFER_TOPIC, a, b)) for a, b in spans])

        async def raw_concurrent() -> int:
            limit = asyncio.Semaphore(8)

            async def one(a: int, b: int) -> int:
                async with limit:
                    return len(await reader.logs([token], TRANSFER_TOPIC, a, b))

            return sum(await asyncio.gather(*(one(a, b) for a, b in spans)))

        await median_rate("ChainReader.logs, 100-block ranges, sequential", raw_sequential)
        await median_rate("ChainReader.logs, 100-block ranges, 8 concurrent", raw_concurrent)

    with web3_client(chain) as w3:
        address = w3.to_checksum_address(token)

        async def web3_sync() -> int:
            total = 0
            for a, b in spans:
                flt = {"fromBlock": a, "toBlock": b, "address": address, "topics": [TRANSFER_TOPIC]}
                total += len(w3.eth.get_logs(flt))  # type: ignore[arg-type]
            return total

        await median_rate("web3 w3.eth.get_logs (sync), sequential", web3_sync)

    aw3 = AsyncWeb3(AsyncHTTPProvider(chain.url))

    async def web3_async() -> int:
        limit = asyncio.Semaphore(8)

        async def one(a: int, b: int) -> int:
            flt = {"fromBlock": a, "toBlock": b, "address": address, "topics": [TRANSFER_TOPIC]}
            async with limit:
                return len(await aw3.eth.get_logs(flt))  # type: ignore[arg-type]

        return sum(await asyncio.gather(*(one(a, b) for a, b in spans)))

    await median_rate("web3 AsyncWeb3.eth.get_logs, 8 concurrent", web3_async)
    await aw3.provider.disconnect()


def main() -> None:
    blocks = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    per_block = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with DevChain.start(extra_args=FAST_BULK_ARGS) as chain:
        token = chain.deploy_token()
        recipients = [f"0x{n:040x}" for n in range(1, 501)]
        started = time.perf_counter()
        first = chain.head() + 1
        build_bulk_chain(chain, token, blocks, per_block, recipients)
        last = chain.head()
        took = time.perf_counter() - started
        print(f"built {blocks} blocks × {per_block} transfers in {took:.1f} s")
        asyncio.run(bench(chain, token, first, last))


if __name__ == "__main__":
    main()
