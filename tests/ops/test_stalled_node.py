"""``scanner run`` with two RPC URLs (fault proxies in front of one anvil that mines a block
every ~0.3 s): one URL's head freezes, then the other's. The real process fails over, logs
``node_stalled``, stays ready while one node moves, reports ``stalled`` in /readyz when none
does, and recovers when one moves again."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from scanner.devchain import DevChain
from scanner.devchain.node import free_port
from tests.e2e.harness import Harness
from tests.ops.support import (
    NOT_LISTENING,
    http_get,
    json_lines,
    scanner_env,
    scanner_process,
    write_config,
)
from tests.support.proxy import ThreadedProxy
from tests.support.wait import until_sync

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)]


@contextmanager
def mining(chain: DevChain, every: float = 0.3) -> Iterator[None]:
    """Mine a block every ``every`` seconds (wall-clock timestamps) until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            chain.mine(1)

    thread = threading.Thread(target=run, name="miner", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _events(text: str, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(text) if e.get("event") == name]


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    return status, json.loads(body)


def test_a_stalled_node_is_failed_over_and_all_stalled_is_not_ready(
    h: Harness, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    with (
        ThreadedProxy(h.chain.url) as one,
        ThreadedProxy(h.chain.url) as two,
        mining(h.chain),
    ):
        config = write_config(
            tmp_path / "scanner.toml",
            one.url + "/v3/KEYONE0123456789",
            [("USDT", h.token, 6)],
            more_rpc_urls=[two.url + "/v3/KEYTWO0123456789"],
            metrics_port=port,
            poll_interval=0.1,
            extra_chain="stall_after = 2.0",
        )
        with scanner_process(["run", "--config", str(config)], scanner_env(db_url)) as proc:
            until_sync(lambda: readyz(port)[0] == 200, 20, what="ready", ignoring=NOT_LISTENING)
            frozen = one.call(one.proxy.freeze())
            (stalled,) = until_sync(
                lambda: _events(proc.err(), "node_stalled"), 15, what="node_stalled"
            )
            assert stalled["head"] == frozen and stalled["url"].startswith(one.url)
            assert "KEYONE" not in proc.err()
            until_sync(
                lambda: readyz(port)[1]["chains"]["anvil"]["cursor"] > frozen + 2,
                15,
                what="scanning on through the second URL",
                ignoring=NOT_LISTENING,
            )
            assert readyz(port)[0] == 200

            two.call(two.proxy.freeze())  # now every node is stalled
            _, body = until_sync(
                lambda: (r := readyz(port))[0] == 503 and r,
                15,
                what="not ready",
                ignoring=NOT_LISTENING,
            )
            assert any("stalled" in reason for reason in body["reasons"]), body
            assert _events(proc.err(), "nodes_stalled")
            assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # alive: waiting

            two.proxy.thaw()
            until_sync(
                lambda: readyz(port)[0] == 200, 15, what="ready again", ignoring=NOT_LISTENING
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.exit_within(15)[0] == 0
