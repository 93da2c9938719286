"""The proxy from a thread, in front of a subprocess: the shape of process-level race tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from scanner.devchain import Anvil
from tests.support.proxy import ThreadedProxy

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from scanner.chain.rpc import Backoff, RpcClient

    async def main() -> None:
        async with RpcClient("child", [sys.argv[1]], backoff=Backoff(0.01, 0.05)) as client:
            print(await client.call("eth_blockNumber"), flush=True)

    asyncio.run(main())
    """
)


def test_hold_a_subprocess_mid_call_then_release(anvil: Anvil) -> None:
    with ThreadedProxy(anvil.url) as tp:
        tp.proxy.fail_http("eth_blockNumber", 502, times=1)
        gate = tp.proxy.hold("eth_blockNumber")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, f"{tp.url}/v3/KEY"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert gate.wait_reached_sync(30)
            assert child.poll() is None  # held inside its call
            gate.release()
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err.decode()
        assert out.decode().strip() == "0x0"
        assert tp.proxy.count("eth_blockNumber") == 2  # held, answered 502, retried
