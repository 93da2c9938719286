"""A real local EVM chain (anvil) and a real ERC-20 for tests, the demo and benchmarks.

`Anvil` runs one anvil node as a child process; `DevChain` wraps it with helpers to
deploy the committed test contracts (see ``tests/chain/build.js``), move tokens and
ETH, shape blocks and time, and cause reorgs. `build_bulk_chain` fills a chain with
many Transfer logs quickly.

The node is started with ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: it dies when the
*thread* that started it exits, so start it from a long-lived thread (the main
thread or the event-loop thread), never from a short-lived worker thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from functools import cache, cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import requests
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_signature_to_4byte_selector
from web3 import HTTPProvider, Web3

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
NPM_ANVIL = REPO_ROOT / "tests/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
JSON_HEADERS = {"Content-Type": "application/json"}

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
RECEIPT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.02
PORT_RETRIES = 3

ETHER = 10**18
GAS_TOP_UP_WEI = 10 * ETHER
MIN_GAS_BALANCE_WEI = ETHER // 10
FAILING_TX_GAS = 100_000
BATCH_TX_BASE_GAS = 60_000
BATCH_GAS_PER_TRANSFER = 35_000
MAX_TRANSFERS_PER_TX = 200

_PR_SET_PDEATHSIG = 1
BATCH_TRANSFER_SELECTOR = function_signature_to_4byte_selector("batchTransfer(address[],uint256[])")

# anvil options that build bulk chains ~30% faster (1,000 blocks x 20 transfers: ~5.3 s
# instead of ~7.4 s): cancun skips the per-block EIP-2935 history-contract writes of the
# default hardfork, and only the last 128 states are kept, in memory. Blocks, receipts and
# logs stay; calls against older state fail, and `anvil_reorg` works up to ~128 blocks deep
# (a bare `--prune-history` makes every `anvil_reorg` fail: "Required data unavailable").
FAST_BULK_ARGS: tuple[str, ...] = ("--hardfork", "cancun", "--prune-history", "128")


class RpcError(RuntimeError):
    """A JSON-RPC error answered by the node."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data


class AnvilStartError(RuntimeError):
    """The node did not start or did not answer in time."""


# --------------------------------------------------------------------------- process


def find_anvil() -> str:
    """Path of the anvil binary: $ANVIL_BIN, the npm copy in tests/chain, or PATH."""
    env = os.environ.get("ANVIL_BIN")
    if env:
        return env
    if NPM_ANVIL.is_file():
        return str(NPM_ANVIL)
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError(
        f"anvil not found: set ANVIL_BIN, or run `npm ci --prefix tests/chain` "
        f"(expected {NPM_ANVIL}), or put anvil on PATH"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM the child when the parent thread exits."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # parent already gone before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening(pid: int, port: int) -> bool:
    """Process `pid` has a listening TCP socket on `port` (not checked off Linux).

    Guards against a lost port race: a node that failed to bind must not be taken
    for ready because another process answers on that port.
    """
    if sys.platform != "linux":
        return True
    try:
        inodes = _socket_inodes(pid)
    except OSError:
        return False
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    for table in (t for t in tables if t.exists()):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "0A" and local_port == port and fields[9] in inodes:
                return True
    return False


def _anvil_args(
    *,
    chain_id: int,
    block_time: float | None,
    extra_args: Sequence[str],
    load_state: str | None,
    dump_state: str | None,
) -> list[str]:
    args = ["--chain-id", str(chain_id), "--silent"]
    if block_time is not None:
        args += ["--block-time", f"{block_time:g}"]
    if load_state is not None:
        args += ["--load-state", load_state]
    if dump_state is not None:
        args += ["--dump-state", dump_state]
    return args + list(extra_args)


def _rpc_payload(request_id: int, method: str, params: Sequence[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}


def _rpc_result(method: str, reply: Mapping[str, Any]) -> Any:
    error = reply.get("error")
    if error is not None:
        raise RpcError(
            method, int(error.get("code", 0)), str(error.get("message", error)), error.get("data")
        )
    return reply.get("result")


class Anvil:
    """One anvil node, a child process listening on 127.0.0.1. Use `Anvil.start()`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self._process = process
        self._port = port
        self._workdir = workdir
        self._client = httpx.Client(headers=JSON_HEADERS, timeout=60.0)
        self._ids = itertools.count(1)

    # ---- lifecycle

    @classmethod
    def start(
        cls,
        *,
        port: int | None = None,
        chain_id: int = 31337,
        block_time: float | None = None,
        extra_args: Sequence[str] = (),
        load_state: str | None = None,
        dump_state: str | None = None,
        ready_timeout: float = START_TIMEOUT_S,
    ) -> Anvil:
        """Start a node and wait until it answers `eth_chainId`."""
        args = _anvil_args(
            chain_id=chain_id,
            block_time=block_time,
            extra_args=extra_args,
            load_state=load_state,
            dump_state=dump_state,
        )
        attempts = 1 if port is not None else PORT_RETRIES
        for attempt in range(attempts):
            node = cls._spawn(port if port is not None else free_port(), args)
            try:
                node.wait_ready(ready_timeout)
                return node
            except AnvilStartError:
                lost_race = node._lost_port_race()
                node.stop()
                if not lost_race or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    async def astart(
        cls,
        *,
        port: int | None = None,
        chain_id: int = 31337,
        block_time: float | None = None,
        extra_args: Sequence[str] = (),
        load_state: str | None = None,
        dump_state: str | None = None,
        ready_timeout: float = START_TIMEOUT_S,
    ) -> Anvil:
        """Like `start`, without blocking the event loop while the node boots.

        The process is spawned in the calling (event-loop) thread so PDEATHSIG is tied to it.
        """
        args = _anvil_args(
            chain_id=chain_id,
            block_time=block_time,
            extra_args=extra_args,
            load_state=load_state,
            dump_state=dump_state,
        )
        node = cls._spawn(port if port is not None else free_port(), args)
        try:
            await node.await_ready(ready_timeout)
        except BaseException:
            node.stop()
            raise
        return node

    @classmethod
    def _spawn(cls, port: int, args: Sequence[str]) -> Anvil:
        workdir = Path(tempfile.mkdtemp(prefix="anvil-"))
        cmd = [find_anvil(), "--host", "127.0.0.1", "--port", str(port), *args]
        with open(workdir / "anvil.log", "wb") as log:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return cls(process, port, workdir)

    def _raise_if_hopeless(self, deadline: float) -> None:
        """While the node does not answer yet: raise if it died or time is up."""
        if self._process.poll() is not None:
            raise AnvilStartError(
                f"anvil exited with code {self._process.returncode}:\n{self.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise AnvilStartError(f"anvil did not answer on {self.url} in time:\n{self.log_tail()}")

    def _lost_port_race(self) -> bool:
        """Someone else took the free port we picked before anvil bound it."""
        return self._process.poll() is not None and "Address already in use" in self.log_tail()

    def _answers(self) -> bool:
        """This process (not another on the same port) listens and answers `eth_chainId`."""
        if not _listening(self.pid, self._port):
            return False
        try:
            self.rpc("eth_chainId")
        except httpx.TransportError:
            return False
        return True

    def wait_ready(self, ready_timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + ready_timeout
        while not self._answers():
            self._raise_if_hopeless(deadline)
            time.sleep(POLL_INTERVAL_S)

    async def await_ready(self, ready_timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + ready_timeout
        while not await asyncio.to_thread(self._answers):
            self._raise_if_hopeless(deadline)
            await asyncio.sleep(POLL_INTERVAL_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (lets --dump-state write), SIGKILL after `timeout`; return the exit code."""
        self._client.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)
        return self._process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ---- properties

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self._workdir / "anvil.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    # ---- JSON-RPC

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; raise `RpcError` with the node's message on error."""
        response = self._client.post(self.url, json=_rpc_payload(next(self._ids), method, params))
        return _rpc_result(method, response.json())

    def rpc_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Many calls in one HTTP request; results in call order.

        anvil runs the calls of a batch concurrently: do not rely on their order
        (e.g. a send and an `evm_mine` in one batch).
        """
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        payload = [
            _rpc_payload(i, method, params) for i, (method, params) in zip(ids, calls, strict=True)
        ]
        replies = {reply["id"]: reply for reply in self._client.post(self.url, json=payload).json()}
        return [
            _rpc_result(method, replies[i]) for i, (method, _params) in zip(ids, calls, strict=True)
        ]


# --------------------------------------------------------------------------- contracts


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """ABI and bytecode of a committed contract artifact (TestToken, OddEmitter, Reverter)."""
    data: dict[str, Any] = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return data


def calldata(signature: str, types: Sequence[str], args: Sequence[Any]) -> str:
    """ABI-encoded call data for `signature`, e.g. ``calldata("mint(address,uint256)", ...)``."""
    selector = function_signature_to_4byte_selector(signature)
    return "0x" + (selector + abi_encode(list(types), list(args))).hex()


def _hexify(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return hex(value)


def _rpc_tx(tx: Mapping[str, Any]) -> dict[str, Any]:
    """A transaction for JSON-RPC: ints become hex quantities."""
    return {key: _hexify(value) for key, value in tx.items()}


def _tx_block_pair(item: tuple[Any, int]) -> list[Any]:
    tx, offset = item
    return [tx if isinstance(tx, str) else _rpc_tx(tx), offset]


def batch_gas(transfers: int) -> int:
    """A generous gas limit for `batchTransfer` to `transfers` (possibly new) holders."""
    return BATCH_TX_BASE_GAS + BATCH_GAS_PER_TRANSFER * transfers


# --------------------------------------------------------------------------- chain


class DevChain:
    """Helpers over one anvil node: contracts, payments, blocks, time, reorgs.

    Addresses returned are lower-case hex; transaction hashes are 0x-hex strings;
    blocks, receipts and logs are the node's raw JSON (hex quantities).
    """

    def __init__(self, anvil: Anvil, *, owns_node: bool = False) -> None:
        self.anvil = anvil
        self.accounts: list[str] = [a.lower() for a in anvil.rpc("eth_accounts")]
        self._owns_node = owns_node
        self._impersonated: set[str] = set()
        self._reverter_code: str | None = None

    @classmethod
    def start(cls, **anvil_options: Any) -> DevChain:
        """Start a fresh node (options as `Anvil.start`) owned by this chain."""
        return cls(Anvil.start(**anvil_options), owns_node=True)

    @cached_property
    def _session(self) -> requests.Session:
        return requests.Session()

    @cached_property
    def w3(self) -> Web3:
        """A synchronous web3.py client of this node (created on first use)."""
        return Web3(HTTPProvider(self.anvil.url, session=self._session))

    def close(self) -> None:
        """Close the web3 session; stop the node if this chain started it."""
        if "_session" in self.__dict__:
            self._session.close()
        if self._owns_node:
            self.anvil.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.anvil.url

    @property
    def deployer(self) -> str:
        """Unlocked dev account 0; deploys contracts and holds minted bulk tokens."""
        return self.accounts[0]

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        return self.anvil.rpc(method, params)

    # ---- sending

    def ensure_sender(self, address: str) -> str:
        """Let `address` send: dev accounts are unlocked, others get impersonated (+ gas money)."""
        sender = address.lower()
        if sender in self.accounts:
            return sender
        if sender not in self._impersonated:
            self.rpc("anvil_impersonateAccount", [sender])
            self._impersonated.add(sender)
        balance = self.balance(sender)  # checked each time: a revert may have undone a top-up
        if balance < MIN_GAS_BALANCE_WEI:
            self.set_balance(sender, balance + GAS_TOP_UP_WEI)
        return sender

    def send_transaction(self, tx: Mapping[str, Any]) -> str:
        """`eth_sendTransaction` from any address (default: the deployer); returns the hash.

        With automine on, returns once the transaction is mined: anvil answers the send before
        the block exists now and then, and a scan started right after would miss the block.
        """
        request = _rpc_tx(tx)
        request["from"] = self.ensure_sender(str(tx.get("from", self.deployer)))
        tx_hash: str = self.rpc("eth_sendTransaction", [request])
        if self.automine():
            self.wait_receipt(tx_hash)
        return tx_hash

    def wait_receipt(self, tx_hash: str, timeout: float = RECEIPT_TIMEOUT_S) -> dict[str, Any]:
        """The receipt of a transaction that automine is about to mine (or has mined)."""
        deadline = time.monotonic() + timeout
        while (found := self.receipt(tx_hash)) is None:
            if not self.automine() or time.monotonic() > deadline:
                raise TimeoutError(f"{tx_hash} not mined (automine off? call mine())")
            time.sleep(POLL_INTERVAL_S / 4)
        return found

    def _deploy(
        self, name: str, constructor_types: Sequence[str] = (), args: Sequence[Any] = ()
    ) -> str:
        data = (
            load_artifact(name)["bytecode"] + abi_encode(list(constructor_types), list(args)).hex()
        )
        receipt = self.wait_receipt(self.send_transaction({"data": data}))
        if receipt["status"] != "0x1" or not receipt.get("contractAddress"):
            raise RuntimeError(f"deploying {name} failed: {receipt}")
        return str(receipt["contractAddress"]).lower()

    # ---- contracts

    def deploy_token(self, name: str = "Test USD", symbol: str = "TUSD", decimals: int = 6) -> str:
        """Deploy a TestToken (needs automine); returns its lower-case address."""
        return self._deploy("TestToken", ["string", "string", "uint8"], [name, symbol, decimals])

    def deploy_odd_emitter(self) -> str:
        """Deploy OddEmitter (wrong-shaped Transfer logs); needs automine."""
        return self._deploy("OddEmitter")

    def deploy_reverter(self) -> str:
        """Deploy Reverter (any call or ETH sent to it reverts); needs automine."""
        return self._deploy("Reverter")

    def call(self, to: str, data: str, block: int | str = "latest") -> str:
        result: str = self.rpc("eth_call", [{"to": to, "data": data}, _hexify(block)])
        return result

    def token_decimals(self, token: str) -> int:
        return int(self.call(token, calldata("decimals()", [], [])), 16)

    def token_balance(self, token: str, holder: str) -> int:
        return int(self.call(token, calldata("balanceOf(address)", ["address"], [holder])), 16)

    def mint(self, token: str, to: str, amount: int) -> str:
        data = calldata("mint(address,uint256)", ["address", "uint256"], [to, amount])
        return self.send_transaction({"to": token, "data": data})

    def transfer(self, token: str, sender: str, to: str, amount: int) -> str:
        data = calldata("transfer(address,uint256)", ["address", "uint256"], [to, amount])
        return self.send_transaction({"from": sender, "to": token, "data": data})

    def batch_transfer(
        self, token: str, sender: str, recipients: Sequence[str], amounts: Sequence[int]
    ) -> str:
        """One tx, one standard Transfer log per recipient."""
        return self.send_transaction(
            {
                "from": sender,
                "to": token,
                "data": batch_calldata(recipients, amounts),
                "gas": batch_gas(len(recipients)),
            }
        )

    def emit_721(self, emitter: str, sender: str, to: str, token_id: int) -> str:
        """OddEmitter: Transfer with 4 topics (tokenId indexed) and empty data."""
        data = calldata(
            "emit721(address,address,uint256)",
            ["address", "address", "uint256"],
            [sender, to, token_id],
        )
        return self.send_transaction({"to": emitter, "data": data})

    def emit_long_data(self, emitter: str, sender: str, to: str, a: int, b: int) -> str:
        """OddEmitter: Transfer with 3 topics and 64 bytes of data."""
        data = calldata(
            "emitLongData(address,address,uint256,uint256)",
            ["address", "address", "uint256", "uint256"],
            [sender, to, a, b],
        )
        return self.send_transaction({"to": emitter, "data": data})

    # ---- ETH

    def balance(self, address: str, block: int | str = "latest") -> int:
        return int(self.rpc("eth_getBalance", [address, _hexify(block)]), 16)

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def code(self, address: str, block: int | str = "latest") -> str:
        result: str = self.rpc("eth_getCode", [address, _hexify(block)])
        return result

    def send_eth(self, sender: str, to: str, value_wei: int) -> str:
        return self.send_transaction({"from": sender, "to": to, "value": value_wei})

    def send_failing_eth(
        self, to: str | None = None, value: int = ETHER, *, sender: str | None = None
    ) -> str:
        """Mine a top-level tx carrying `value` wei to `to` whose receipt status is 0.

        `to` (say a watched EOA) is given the Reverter's runtime code for this one
        transaction (`anvil_setCode`), then its old code is put back, so an EOA looks like
        an EOA again. With no `to`, a fresh random address keeps the Reverter code. Gas is
        explicit (no estimate). If automine is off, one block is mined to include it.
        """
        target = (to or "0x" + os.urandom(20).hex()).lower()
        old_code = self.code(target)
        self.rpc("anvil_setCode", [target, self._reverter_runtime()])
        try:
            tx = {
                "from": sender or self.deployer,
                "to": target,
                "value": value,
                "gas": FAILING_TX_GAS,
            }
            tx_hash = self.send_transaction(tx)
            if not self.automine():
                self.mine()
            self.wait_receipt(tx_hash)
        finally:
            if to is not None:
                self.rpc("anvil_setCode", [target, old_code])
        return tx_hash

    def _reverter_runtime(self) -> str:
        """Reverter's deployed code: what its creation code returns (an eth_call, no tx)."""
        if self._reverter_code is None:
            creation = {"from": self.deployer, "data": load_artifact("Reverter")["bytecode"]}
            self._reverter_code = str(self.rpc("eth_call", [creation, "latest"]))
        return self._reverter_code

    # ---- blocks and time

    def mine(self, n: int = 1, interval: int | None = None) -> None:
        """Mine `n` blocks (pending txs go into the first), `interval` seconds apart."""
        params = [hex(n)] if interval is None else [hex(n), hex(interval)]
        self.rpc("anvil_mine", params)

    def automine(self) -> bool:
        return bool(self.rpc("anvil_getAutomine"))

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", [enabled])

    def set_next_timestamp(self, ts: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", [ts])

    def increase_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [seconds])

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(self, n: int | str = "latest", full: bool = False) -> dict[str, Any]:
        found: dict[str, Any] | None = self.rpc("eth_getBlockByNumber", [_hexify(n), full])
        if found is None:
            raise LookupError(f"no block {n}")
        return found

    def snapshot(self) -> str:
        snap_id: str = self.rpc("evm_snapshot")
        return snap_id

    def revert(self, snap_id: str) -> bool:
        return bool(self.rpc("evm_revert", [snap_id]))

    def reorg(self, depth: int, txs: Sequence[tuple[str | Mapping[str, Any], int]] = ()) -> None:
        """Replace the last `depth` blocks (same heights, new hashes) via `anvil_reorg`.

        Each item is (raw signed tx hex, e.g. from `raw_tx`, or a tx dict; block offset
        0..depth-1 from the first replaced block).
        """
        self.rpc("anvil_reorg", [depth, [_tx_block_pair(item) for item in txs]])

    def rollback(self, depth: int) -> None:
        self.rpc("anvil_rollback", [depth])

    # ---- reads

    def raw_tx(self, tx_hash: str) -> str:
        raw: str | None = self.rpc("eth_getRawTransactionByHash", [tx_hash])
        if raw is None:
            raise LookupError(f"no transaction {tx_hash}")
        return raw

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", [tx_hash])
        return found

    def logs(
        self,
        from_block: int | str = 0,
        to_block: int | str = "latest",
        address: str | Sequence[str] | None = None,
        topics: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"fromBlock": _hexify(from_block), "toBlock": _hexify(to_block)}
        if address is not None:
            query["address"] = address
        if topics is not None:
            query["topics"] = list(topics)
        found: list[dict[str, Any]] = self.rpc("eth_getLogs", [query])
        return found


def _word(value: int) -> str:
    return f"{value:064x}"


def batch_calldata(recipients: Sequence[str], amounts: Sequence[int]) -> str:
    """`batchTransfer(address[],uint256[])` call data, encoded by hand (bulk builds are hot)."""
    if len(recipients) != len(amounts):
        raise ValueError("recipients and amounts differ in length")
    n = len(recipients)
    head = _word(0x40) + _word(0x60 + 0x20 * n)
    addresses = "".join(_word(int(a, 16)) for a in recipients)
    values = "".join(_word(v) for v in amounts)
    return f"0x{BATCH_TRANSFER_SELECTOR.hex()}{head}{_word(n)}{addresses}{_word(n)}{values}"


# --------------------------------------------------------------------------- bulk


def _bulk_block_txs(
    token: str, sender: str, nonce: int, recipients: Sequence[str], amount: int
) -> list[tuple[str, Sequence[Any]]]:
    """`eth_sendTransaction` calls paying `recipients`, at most MAX_TRANSFERS_PER_TX per tx."""
    calls: list[tuple[str, Sequence[Any]]] = []
    for start in range(0, len(recipients), MAX_TRANSFERS_PER_TX):
        chunk = recipients[start : start + MAX_TRANSFERS_PER_TX]
        tx = {
            "from": sender,
            "to": token,
            "nonce": hex(nonce + len(calls)),
            "gas": hex(batch_gas(len(chunk))),
            "data": batch_calldata(chunk, [amount] * len(chunk)),
        }
        calls.append(("eth_sendTransaction", [tx]))
    return calls


def _raise_gas_limit(chain: DevChain, transfers_per_block: int) -> None:
    txs = -(-transfers_per_block // MAX_TRANSFERS_PER_TX)
    needed = batch_gas(MAX_TRANSFERS_PER_TX) * txs
    if needed > int(chain.block()["gasLimit"], 16):
        chain.rpc("evm_setBlockGasLimit", [hex(needed)])


def _check_bulk_block(chain: DevChain, block_number: int, expected_txs: int) -> None:
    block = chain.block(block_number)
    receipts = [chain.receipt(h) for h in block["transactions"]]
    if len(receipts) != expected_txs or any(r is None or r["status"] != "0x1" for r in receipts):
        raise RuntimeError(f"bulk block {block_number} has bad transactions: {receipts}")


def build_bulk_chain(
    chain: DevChain,
    token: str,
    blocks: int,
    transfers_per_block: int,
    recipients: Sequence[str],
    *,
    amount: int = 1_000,
) -> None:
    """Append `blocks` blocks, each with `transfers_per_block` Transfer logs of `token`.

    First one block with the deployer minting what it needs; then the deployer pays
    `recipients` in turn (cycling) with `batchTransfer` (at most MAX_TRANSFERS_PER_TX
    per tx), automine off, one `evm_mine` per block. The automine setting is restored.
    """
    if blocks <= 0 or transfers_per_block <= 0:
        return
    if not recipients:
        raise ValueError("recipients must not be empty")
    sender = chain.deployer
    _raise_gas_limit(chain, transfers_per_block)
    was_automine = chain.automine()
    chain.set_automine(False)
    try:
        mint_tx = chain.mint(token, sender, amount * blocks * transfers_per_block)
        chain.mine()
        if (chain.receipt(mint_tx) or {}).get("status") != "0x1":
            raise RuntimeError(f"bulk mint failed: {chain.receipt(mint_tx)}")
        _mine_bulk_blocks(chain, token, sender, blocks, transfers_per_block, recipients, amount)
    finally:
        chain.set_automine(was_automine)


def _mine_bulk_blocks(
    chain: DevChain,
    token: str,
    sender: str,
    blocks: int,
    per_block: int,
    recipients: Sequence[str],
    amount: int,
) -> None:
    nonce = int(chain.rpc("eth_getTransactionCount", [sender, "pending"]), 16)
    cursor = itertools.cycle(recipients)
    for index in range(blocks):
        calls = _bulk_block_txs(
            token, sender, nonce, [next(cursor) for _ in range(per_block)], amount
        )
        chain.anvil.rpc_batch(calls)
        chain.rpc("evm_mine")
        nonce += len(calls)
        if index == 0:
            _check_bulk_block(chain, chain.head(), len(calls))
